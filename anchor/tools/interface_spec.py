"""The one description of the program's interface: instructions, accounts, events, errors.

`gen_interface.py` turns it into the Anchor 0.30 IDL (anchor/idl/etp_settlement.json) and
into the Rust constants the program uses (discriminators, account byte offsets, error
codes: programs/etp_settlement/src/interface.rs). A test checks that both committed files
are what this description generates, so the IDL cannot drift from the code.

Layouts are Borsh (packed, little-endian), as Anchor serialises them. Account fields are
ordered so that every multi-byte field sits at a naturally aligned offset (the account's
data starts 8-byte aligned in the runtime's input buffer), which lets the program use plain
aligned loads.
"""

from __future__ import annotations

PROGRAM_NAME = "etp_settlement"
PROGRAM_VERSION = "0.1.0"
PROGRAM_DESCRIPTION = (
    "ETP settlement: aggregators escrow tokens, the hub settles verified energy trades "
    "(one record per trade), parties may dispute within a window"
)
KEYPAIR_FILE = "anchor/keys/etp_settlement-keypair.json"

MAX_DEVICES = 8
ROLE_SELLER = 0  # battery owner
ROLE_BUYER = 1  # aggregator

# Field types: "pubkey", "u8", "u32", "u64", "i64", "bool", ("array", elem, n), ("vec", elem),
# or ("defined", TypeName).
ACCOUNTS: dict[str, list[tuple[str, object]]] = {
    "Market": [
        ("authority", "pubkey"),
        ("settler", "pubkey"),
        ("payment_mint", "pubkey"),
        ("token_program", "pubkey"),
        ("dispute_window_seconds", "i64"),
        ("trades_settled", "u64"),
        ("volume", "u64"),
        ("paused", "bool"),
        ("bump", "u8"),
        ("mint_decimals", "u8"),
    ],
    "Reputation": [
        ("market", "pubkey"),
        ("owner", "pubkey"),
        ("trades", "u64"),
        ("energy_wh", "u64"),
        ("volume", "u64"),
        ("score", "i64"),
        ("disputes_opened", "u32"),
        ("disputes_lost", "u32"),
        ("device_ids", ("array", "u32", MAX_DEVICES)),
        ("role", "u8"),
        ("device_count", "u8"),
        ("bump", "u8"),
    ],
    "Escrow": [
        ("market", "pubkey"),
        ("aggregator", "pubkey"),
        ("vault", "pubkey"),
        ("deposited", "u64"),
        ("withdrawn", "u64"),
        ("paid", "u64"),
        ("refunded", "u64"),
        ("max_price_per_kwh", "u64"),
        ("reserved", "u64"),
        ("reserved_until", "i64"),
        ("bump", "u8"),
        ("vault_bump", "u8"),
    ],
    "TradeRecord": [
        ("market", "pubkey"),
        ("buyer", "pubkey"),
        ("seller", "pubkey"),
        ("auction_id", "u64"),
        ("trade_id", "u64"),
        ("price_per_kwh", "u64"),
        ("energy_wh", "u64"),
        ("amount", "u64"),
        ("refunded", "u64"),
        ("settled_at", "i64"),
        ("dispute_deadline", "i64"),
        ("evidence_hash", ("array", "u8", 32)),
        ("device_id", "u32"),
        ("status", "u8"),
        ("disputed_by", "u8"),
        ("bump", "u8"),
    ],
}

TYPES: dict[str, list[tuple[str, object]]] = {
    "TradeInput": [
        ("auction_id", "u64"),
        ("trade_id", "u64"),
        ("device_id", "u32"),
        ("price_per_kwh", "u64"),
        ("energy_wh", "u64"),
        ("evidence_hash", ("array", "u8", 32)),
    ],
}

# TradeRecord.status / disputed_by values
TRADE_STATUS = {"Settled": 0, "Disputed": 1, "Refunded": 2, "Upheld": 3}
DISPUTED_BY = {"None": 0, "Buyer": 1, "Seller": 2}

EVENTS: dict[str, list[tuple[str, object]]] = {
    "TradeSettled": [
        ("market", "pubkey"),
        ("auction_id", "u64"),
        ("trade_id", "u64"),
        ("buyer", "pubkey"),
        ("seller", "pubkey"),
        ("device_id", "u32"),
        ("price_per_kwh", "u64"),
        ("energy_wh", "u64"),
        ("amount", "u64"),
        ("settled_at", "i64"),
        ("evidence_hash", ("array", "u8", 32)),
    ],
    "DisputeOpened": [
        ("market", "pubkey"),
        ("auction_id", "u64"),
        ("trade_id", "u64"),
        ("by", "pubkey"),
    ],
    "DisputeResolved": [
        ("market", "pubkey"),
        ("auction_id", "u64"),
        ("trade_id", "u64"),
        ("refund_amount", "u64"),
    ],
}

SYSTEM_PROGRAM = "11111111111111111111111111111111"
WELL_KNOWN_PROGRAMS = {
    "SYSTEM_PROGRAM": SYSTEM_PROGRAM,
    "TOKEN_PROGRAM": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
    "TOKEN_2022_PROGRAM": "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",
}


def _acct(name: str, writable: bool = False, signer: bool = False, **extra: object) -> dict:
    entry: dict[str, object] = {"name": name}
    if writable:
        entry["writable"] = True
    if signer:
        entry["signer"] = True
    entry.update(extra)
    return entry


def _seed_const(text: str) -> dict:
    return {"kind": "const", "value": list(text.encode())}


def _seed_account(path: str) -> dict:
    return {"kind": "account", "path": path}


MARKET_PDA = {"seeds": [_seed_const("market"), _seed_account("authority")]}

# Instructions: name -> (accounts, args, docs). Accounts after `remaining` are per trade.
INSTRUCTIONS: list[dict] = [
    {
        "name": "initialize_market",
        "docs": ['Creates the market PDA ["market", authority]; fixes the payment mint.'],
        "accounts": [
            _acct("authority", writable=True, signer=True),
            _acct("market", writable=True, pda=MARKET_PDA),
            _acct("payment_mint"),
            _acct("token_program"),
            _acct("system_program", address=SYSTEM_PROGRAM),
        ],
        "args": [("settler", "pubkey"), ("dispute_window_seconds", "i64")],
    },
    {
        "name": "register_participant",
        "docs": [
            'Creates the caller\'s Reputation PDA ["reputation", market, owner];',
            "role 0 = battery owner (1..8 device ids), 1 = aggregator (none).",
        ],
        "accounts": [
            _acct("owner", writable=True, signer=True),
            _acct("market"),
            _acct(
                "reputation",
                writable=True,
                pda={
                    "seeds": [
                        _seed_const("reputation"),
                        _seed_account("market"),
                        _seed_account("owner"),
                    ]
                },
            ),
            _acct("system_program", address=SYSTEM_PROGRAM),
        ],
        "args": [("role", "u8"), ("device_ids", ("vec", "u32"))],
    },
    {
        "name": "open_escrow",
        "docs": [
            "Creates the aggregator's Escrow PDA and its vault token account",
            '["vault", market, aggregator] whose token owner is the Escrow PDA.',
        ],
        "accounts": [
            _acct("aggregator", writable=True, signer=True),
            _acct("market"),
            _acct("reputation"),
            _acct(
                "escrow",
                writable=True,
                pda={
                    "seeds": [
                        _seed_const("escrow"),
                        _seed_account("market"),
                        _seed_account("aggregator"),
                    ]
                },
            ),
            _acct(
                "vault",
                writable=True,
                pda={
                    "seeds": [
                        _seed_const("vault"),
                        _seed_account("market"),
                        _seed_account("aggregator"),
                    ]
                },
            ),
            _acct("payment_mint"),
            _acct("token_program"),
            _acct("system_program", address=SYSTEM_PROGRAM),
        ],
        "args": [("max_price_per_kwh", "u64")],
    },
    {
        "name": "fund",
        "docs": ["Moves tokens from the aggregator's token account into its vault."],
        "accounts": [
            _acct("aggregator", signer=True),
            _acct("market"),
            _acct("escrow", writable=True),
            _acct("vault", writable=True),
            _acct("source", writable=True),
            _acct("payment_mint"),
            _acct("token_program"),
        ],
        "args": [("amount", "u64")],
    },
    {
        "name": "withdraw",
        "docs": ["Returns unspent vault tokens to the aggregator (signed by the Escrow PDA)."],
        "accounts": [
            _acct("aggregator", signer=True),
            _acct("market"),
            _acct("escrow", writable=True),
            _acct("vault", writable=True),
            _acct("destination", writable=True),
            _acct("payment_mint"),
            _acct("token_program"),
        ],
        "args": [("amount", "u64")],
    },
    {
        "name": "reserve_funds",
        "docs": [
            "Settler only: earmarks escrow funds for trades the hub confirmed but has not",
            "settled yet. The aggregator cannot withdraw reserved funds until the",
            "reservation lapses (RESERVATION_SECONDS after the last reserve_funds);",
            "settlement consumes it.",
        ],
        "accounts": [
            _acct("settler", signer=True),
            _acct("market"),
            _acct("escrow", writable=True),
            _acct("vault"),
        ],
        "args": [("amount", "u64")],
    },
    {
        "name": "release_funds",
        "docs": [
            "Settler only: gives back a reservation (a confirmed trade that will not settle)."
        ],
        "accounts": [
            _acct("settler", signer=True),
            _acct("market"),
            _acct("escrow", writable=True),
        ],
        "args": [("amount", "u64")],
    },
    {
        "name": "settle_trades",
        "docs": [
            "Settles a batch of verified trades. After the fixed accounts come, per",
            "trade in order: trade_record (w), buyer_escrow (w), buyer_vault (w),",
            "buyer_reputation (w), seller_reputation (w), seller_token_account (w).",
            'Each trade_record is the PDA ["trade", market, auction_id u64 LE,',
            "trade_id u64 LE], created here: a trade can be settled once.",
        ],
        "accounts": [
            _acct("settler", writable=True, signer=True),
            _acct("market", writable=True),
            _acct("payment_mint"),
            _acct("token_program"),
            _acct("system_program", address=SYSTEM_PROGRAM),
        ],
        "args": [("trades", ("vec", ("defined", "TradeInput")))],
    },
    {
        "name": "open_dispute",
        "docs": ["The trade's buyer or seller disputes it, before its dispute_deadline."],
        "accounts": [
            _acct("disputer", signer=True),
            _acct("market"),
            _acct("trade_record", writable=True),
            _acct("disputer_reputation", writable=True),
        ],
        "args": [],
    },
    {
        "name": "resolve_dispute",
        "docs": [
            "Market authority only. refund_amount > 0: the seller was at fault; the",
            "authority refunds the buyer's vault from its own token account and the",
            "seller's score drops. refund_amount = 0: the dispute was unfounded and",
            "the disputer's score drops.",
        ],
        "accounts": [
            _acct("authority", signer=True),
            _acct("market"),
            _acct("trade_record", writable=True),
            _acct("buyer_reputation", writable=True),
            _acct("seller_reputation", writable=True),
            _acct("buyer_escrow", writable=True),
            _acct("buyer_vault", writable=True),
            _acct("authority_token_account", writable=True),
            _acct("payment_mint"),
            _acct("token_program"),
        ],
        "args": [("refund_amount", "u64")],
    },
    {
        "name": "rotate_settler",
        "docs": ["Market authority only: replaces the hub's settlement key."],
        "accounts": [_acct("authority", signer=True), _acct("market", writable=True)],
        "args": [("new_settler", "pubkey")],
    },
    {
        "name": "pause_market",
        "docs": [
            "Market authority only: paused markets accept no settlement, escrow or",
            "registration (withdrawals and disputes stay open).",
        ],
        "accounts": [_acct("authority", signer=True), _acct("market", writable=True)],
        "args": [("paused", "bool")],
    },
]

SETTLE_ACCOUNTS_PER_TRADE = 6
REPUTATION_REWARD = 1  # score points per settled trade, each party
DISPUTE_PENALTY = 10  # score points lost by the party at fault
MAX_DISPUTE_WINDOW_SECONDS = 30 * 24 * 3600
RESERVATION_SECONDS = 3600  # a reservation lapses this long after the last reserve_funds

ERRORS: list[tuple[str, str]] = [
    ("Unauthorized", "Signer is not allowed to do this"),
    ("MissingSignature", "A required signer did not sign"),
    ("NotWritable", "An account that must be writable is read-only"),
    ("InvalidAccountOwner", "Account is not owned by the expected program"),
    ("InvalidDiscriminator", "Account is not of the expected type"),
    ("InvalidPda", "Account address is not the expected program-derived address"),
    ("AlreadyInitialized", "Account already exists"),
    ("InvalidMint", "Mint does not match the market's payment mint"),
    (
        "InvalidTokenProgram",
        "Token program is neither SPL Token nor Token-2022, or not the market's",
    ),
    ("InvalidSystemProgram", "System program account is wrong"),
    ("InvalidTokenAccount", "Token account has the wrong mint, owner or state"),
    ("MarketPaused", "Market is paused"),
    ("MarketMismatch", "Account belongs to another market"),
    ("InsufficientEscrow", "Escrow holds less than the amount"),
    ("PriceAboveCap", "Price is above the aggregator's cap"),
    ("AmountOverflow", "Amount overflows"),
    ("ZeroAmount", "Amount must be positive"),
    ("InvalidRole", "Participant has the wrong role"),
    ("InvalidDevices", "Device list is empty, too long, or has a zero id"),
    ("UnknownDevice", "Device is not registered to the seller"),
    ("NotAParty", "Only the trade's buyer or seller may dispute"),
    ("DisputeWindowClosed", "The dispute window of this trade has closed"),
    ("DisputeNotAllowed", "Trade is already disputed or resolved"),
    ("NoOpenDispute", "Trade has no open dispute"),
    ("RefundTooLarge", "Refund exceeds the trade's amount"),
    ("DuplicateAccount", "The same account was passed in two roles"),
    ("InvalidInstructionData", "Instruction data is malformed"),
    ("NotEnoughAccounts", "Not enough accounts for this instruction"),
    ("InvalidDisputeWindow", "Dispute window must be between 1 s and 30 days"),
    ("EmptyBatch", "No trades in the batch"),
    ("UnknownInstruction", "Unknown instruction discriminator"),
    ("PartyMismatch", "Account does not belong to the trade's party"),
    ("RentSysvarUnsupported", "Rent sysvar has a non-integral exemption threshold"),
    ("FundsReserved", "Amount exceeds the escrow's unreserved funds"),
    ("TooManyAccounts", "More than 64 accounts passed"),
]
ERROR_CODE_BASE = 6000
