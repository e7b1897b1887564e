"""Writes the fixture anchor/ts-check/check.js compares with Anchor's own TypeScript coder.

    python anchor/ts-check/make_fixture.py OUT.json   (after python anchor/build.py)

Instruction data encoded by tools/etp_client.py, and account data and an event produced by
the program on LiteSVM.
"""

import base64
import hashlib
import json
import sys
from pathlib import Path

ANCHOR_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ANCHOR_DIR / "tools"))
from etp_client import TradeInput  # noqa: E402
from svm_world import World  # noqa: E402

w = World((ANCHOR_DIR / "target" / "etp_settlement.so").read_bytes())
w.must(w.initialize_market(3600))
seller = w.new_seller([7, 8])
buyer = w.new_buyer(10_000_000, 1_000_000)
t = TradeInput(3, 4, 7, 215_000, 2500, hashlib.sha256(b"e").digest())
o = w.must(w.settle([(t, buyer, seller)]))
ix_init = w.idl.instruction(
    "initialize_market",
    {
        "authority": w.authority.pubkey(),
        "market": w.market,
        "payment_mint": w.mint,
        "token_program": w.token_program,
    },
    {"settler": w.settler.pubkey(), "dispute_window_seconds": 3600},
)
ix_reg = w.idl.instruction(
    "register_participant",
    {"owner": seller.pubkey, "market": w.market, "reputation": seller.reputation},
    {"role": 0, "device_ids": [7, 8]},
)
ix_settle = w.settle_instruction([(t, buyer, seller)])
rec = w.idl.trade_record_address(w.market, 3, 4)
fx = {
    "settler": str(w.settler.pubkey()),
    "ix_init": bytes(ix_init.data).hex(),
    "ix_reg": bytes(ix_reg.data).hex(),
    "ix_settle": bytes(ix_settle.data).hex(),
    "evidence": list(t.evidence_hash),
    "market": base64.b64encode(w.data_of(w.market)).decode(),
    "record": base64.b64encode(w.data_of(rec)).decode(),
    "escrow": base64.b64encode(w.data_of(w.escrow(buyer.pubkey))).decode(),
    "reputation": base64.b64encode(w.data_of(seller.reputation)).decode(),
    "event": next(line.split(": ", 1)[1] for line in o.logs if line.startswith("Program data: ")),
    "py_record": {
        k: (
            str(v)
            if not isinstance(v, (int, bytes, list, bool))
            else (v.hex() if isinstance(v, bytes) else v)
        )
        for k, v in w.decoded(rec).items()
    },
}
Path(sys.argv[1]).write_text(json.dumps(fx, indent=1))
