// Cross-check of the IDL with Anchor's own TypeScript coder (@coral-xyz/anchor 0.30.1):
// instruction data encoded by our Python client, account data and an event written by the
// program must be what BorshCoder produces/decodes from anchor/idl/etp_settlement.json.
//
//   npm install --prefix /tmp/etp-ts @coral-xyz/anchor@0.30.1
//   python anchor/build.py && python anchor/ts-check/make_fixture.py /tmp/etp-ts/fixture.json
//   NODE_PATH=/tmp/etp-ts/node_modules node anchor/ts-check/check.js \
//       anchor/idl/etp_settlement.json /tmp/etp-ts/fixture.json
const anchor = require("@coral-xyz/anchor");
const fs = require("fs");
const idl = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const fx = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const coder = new anchor.BorshCoder(idl);
const { PublicKey } = require("@solana/web3.js");
const BN = anchor.BN;
let ok = true;
function cmp(name, a, b) { const same = a === b; ok = ok && same; console.log(`${same ? "OK  " : "FAIL"} ${name}${same ? "" : `\n  ts ${a}\n  py ${b}`}`); }
cmp("initialize_market encoding", coder.instruction.encode("initialize_market", { settler: new PublicKey(fx.settler), dispute_window_seconds: new BN(3600) }).toString("hex"), fx.ix_init);
cmp("register_participant encoding", coder.instruction.encode("register_participant", { role: 0, device_ids: [7, 8] }).toString("hex"), fx.ix_reg);
cmp("settle_trades encoding", coder.instruction.encode("settle_trades", { trades: [{ auction_id: new BN(3), trade_id: new BN(4), device_id: 7, price_per_kwh: new BN(215000), energy_wh: new BN(2500), evidence_hash: fx.evidence }] }).toString("hex"), fx.ix_settle);
const dec = coder.instruction.decode(Buffer.from(fx.ix_settle, "hex"));
cmp("settle_trades decode name", dec.name, "settle_trades");
for (const [name, key] of [["Market", "market"], ["TradeRecord", "record"], ["Escrow", "escrow"], ["Reputation", "reputation"]]) {
  const acc = coder.accounts.decode(name, Buffer.from(fx[key], "base64"));
  console.log(`OK   decoded ${name}: ${Object.keys(acc).length} fields`);
}
const rec = coder.accounts.decode("TradeRecord", Buffer.from(fx.record, "base64"));
cmp("record amount", rec.amount.toString(), String(fx.py_record.amount));
cmp("record seller", rec.seller.toBase58(), fx.py_record.seller);
cmp("record evidence", Buffer.from(rec.evidence_hash).toString("hex"), fx.py_record.evidence_hash);
const ev = coder.events.decode(fx.event);
cmp("event name", ev.name, "TradeSettled");
cmp("event amount", ev.data.amount.toString(), "537500");
process.exit(ok ? 0 : 1);
