//! settle_trades: the hub's settler pays a batch of verified trades from aggregator escrow
//! to battery owners. One TradeRecord PDA per (market, auction id, trade id), created with a
//! plain create, makes each trade payable exactly once, in this transaction or any other.

use crate::account::{Account, Data, Input, Reader, TOKEN_ACCOUNT_OWNER};
use crate::cpi;
use crate::escrow as escrows;
use crate::interface::{
    consts, disc, err, escrow, ev_trade_settled as ev, event, market, reputation, trade_record,
};
use crate::market as markets;
use crate::participant;
use crate::sys::{self, ProgramResult, Seeds};

pub const SEED: &[u8] = b"trade";
const FIXED_ACCOUNTS: usize = 5;
const PER_TRADE: usize = consts::SETTLE_ACCOUNTS_PER_TRADE as usize;
const WH_PER_KWH: u64 = 1000;

/// One trade as the settler submits it (Borsh TradeInput, 68 bytes, read in field order).
struct TradeInput {
    auction_id: u64,
    trade_id: u64,
    device_id: u32,
    price_per_kwh: u64,
    energy_wh: u64,
    evidence_hash: [u8; 32],
}

#[inline(always)]

fn read_trade(args: &mut Reader) -> ProgramResult<TradeInput> {
    let trade = TradeInput {
        auction_id: args.u64()?,
        trade_id: args.u64()?,
        device_id: args.u32()?,
        price_per_kwh: args.u64()?,
        energy_wh: args.u64()?,
        evidence_hash: args.bytes32()?,
    };
    Ok(trade)
}

/// Token amount of a trade: price (token base units per kWh) x energy (Wh) / 1000, rounded
/// down, computed here so the settler cannot name an amount of its own.
#[inline(always)]
fn trade_amount(price_per_kwh: u64, energy_wh: u64) -> ProgramResult<u64> {
    // price * energy < 2^(128 - lz(price) - lz(energy)): refusing when that bound exceeds
    // 2^64 is conservative and needs no 128-bit multiply (which BPF lacks).
    if price_per_kwh.leading_zeros() + energy_wh.leading_zeros() < 64 {
        return Err(err::AMOUNT_OVERFLOW);
    }
    let amount = price_per_kwh * energy_wh / WH_PER_KWH;
    if amount == 0 {
        return Err(err::ZERO_AMOUNT);
    }
    Ok(amount)
}

/// Fixed accounts: settler (signer, payer), market (writable), payment_mint, token_program,
/// system_program; then six per trade (see the IDL). Args: trades (Vec<TradeInput>).
pub fn settle_trades(input: &Input, args: &mut Reader) -> ProgramResult {
    let count = args.u32()? as usize;
    if count == 0 {
        return Err(err::EMPTY_BATCH);
    }
    if input.accounts.len() != FIXED_ACCOUNTS + PER_TRADE * count {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    }
    let [settler, market_account, mint, token_program, system_program, ..] = input.accounts else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    settler.require_signer()?;
    settler.require_writable()?;
    market_account.require_writable()?;
    let market_data = markets::load_active(input, market_account)?;
    settler.require_key(market_data.key(market::SETTLER), err::UNAUTHORIZED)?;
    let decimals = markets::check_payment_accounts(&market_data, mint, token_program)?;
    markets::check_system_program(system_program)?;
    let now = sys::unix_timestamp()?;
    let window = market_data.i64(market::DISPUTE_WINDOW_SECONDS);

    let mut i = 0;
    while i < count {
        let trade = read_trade(args)?;
        let base = FIXED_ACCOUNTS + PER_TRADE * i;
        let Some([record, escrow_account, vault, buyer_rep, seller_rep, seller_token]) = input
            .accounts
            .get(base..base + PER_TRADE)
            .and_then(|s| <&[Account; PER_TRADE]>::try_from(s).ok())
        else {
            return Err(err::NOT_ENOUGH_ACCOUNTS);
        };
        settle_one(
            input,
            &trade,
            Accounts {
                settler,
                market_account,
                market_data: &market_data,
                mint,
                token_program,
                record,
                escrow_account,
                vault,
                buyer_rep,
                seller_rep,
                seller_token,
                decimals,
                now,
                window,
            },
        )?;
        i += 1;
    }
    args.finish()
}

struct Accounts<'a> {
    settler: &'a Account,
    market_account: &'a Account,
    market_data: &'a Data,
    mint: &'a Account,
    token_program: &'a Account,
    record: &'a Account,
    escrow_account: &'a Account,
    vault: &'a Account,
    buyer_rep: &'a Account,
    seller_rep: &'a Account,
    seller_token: &'a Account,
    decimals: u8,
    now: i64,
    window: i64,
}

/// Checks, records and pays one trade (BPF calls take at most five arguments, hence the
/// struct).
fn settle_one(input: &Input, trade: &TradeInput, a: Accounts) -> ProgramResult {
    let (decimals, now, window) = (a.decimals, a.now, a.window);
    for account in [
        a.record,
        a.escrow_account,
        a.vault,
        a.buyer_rep,
        a.seller_rep,
        a.seller_token,
    ] {
        account.require_writable()?;
    }
    let market_key = a.market_account.key();
    let escrow_data = escrows::load(input, a.escrow_account, market_key)?;
    let buyer = *escrow_data.key(escrow::AGGREGATOR);
    let buyer_data = participant::load(input, a.buyer_rep, market_key, &buyer)?;
    if buyer_data.u8(reputation::ROLE) as u64 != consts::ROLE_BUYER {
        return Err(err::INVALID_ROLE);
    }
    let seller_data = participant::load_role(input, a.seller_rep, market_key, consts::ROLE_SELLER)?;
    let seller = *seller_data.key(reputation::OWNER);
    if !participant::has_device(&seller_data, trade.device_id) {
        return Err(err::UNKNOWN_DEVICE);
    }
    let seller_token = a
        .seller_token
        .token_account(a.token_program.key(), a.mint.key())?;
    if *seller_token.key(TOKEN_ACCOUNT_OWNER) != seller {
        return Err(err::PARTY_MISMATCH);
    }
    if a.seller_token.same(a.vault) {
        return Err(err::DUPLICATE_ACCOUNT);
    }
    if trade.price_per_kwh > escrow_data.u64(escrow::MAX_PRICE_PER_KWH) {
        return Err(err::PRICE_ABOVE_CAP);
    }
    let amount = trade_amount(trade.price_per_kwh, trade.energy_wh)?;
    if escrows::vault_balance(&escrow_data, a.vault, a.market_data)? < amount {
        return Err(err::INSUFFICIENT_ESCROW);
    }

    // The record: canonical PDA of (market, auction id, trade id), created or the batch fails.
    let auction = trade.auction_id.to_le_bytes();
    let trade_id = trade.trade_id.to_le_bytes();
    let (address, bump) = sys::find_program_address(
        &Seeds::new([SEED, &market_key.0[..], &auction[..], &trade_id[..]]),
        &input.program_id,
    )?;
    a.record.require_key(&address, err::INVALID_PDA)?;
    let bump_seed = [bump];
    let record_seeds = Seeds::new([
        SEED,
        &market_key.0[..],
        &auction[..],
        &trade_id[..],
        &bump_seed[..],
    ]);
    cpi::create_pda_account(
        a.settler,
        a.record,
        trade_record::SIZE as u64,
        &input.program_id,
        &record_seeds,
    )?;

    // Pay: vault -> battery owner, signed by the escrow PDA.
    let escrow_bump = [escrow_data.u8(escrow::BUMP)];
    let escrow_seeds = Seeds::new([
        escrows::SEED,
        &market_key.0[..],
        &buyer.0[..],
        &escrow_bump[..],
    ]);
    let signer = escrow_seeds.as_signer();
    cpi::transfer_checked(
        a.token_program,
        a.vault,
        a.mint,
        a.seller_token,
        a.escrow_account,
        amount,
        decimals,
        Some(&signer),
    )?;

    let record = a.record.fresh(trade_record::SIZE)?;
    record.set_u64(0, disc::TRADE_RECORD);
    record.set_key(trade_record::MARKET, market_key);
    record.set_key(trade_record::BUYER, &buyer);
    record.set_key(trade_record::SELLER, &seller);
    record.set_u64(trade_record::AUCTION_ID, trade.auction_id);
    record.set_u64(trade_record::TRADE_ID, trade.trade_id);
    record.set_u64(trade_record::PRICE_PER_KWH, trade.price_per_kwh);
    record.set_u64(trade_record::ENERGY_WH, trade.energy_wh);
    record.set_u64(trade_record::AMOUNT, amount);
    record.set_i64(trade_record::SETTLED_AT, now);
    record.set_i64(trade_record::DISPUTE_DEADLINE, now.saturating_add(window));
    copy32(&record, trade_record::EVIDENCE_HASH, &trade.evidence_hash);
    record.set_u32(trade_record::DEVICE_ID, trade.device_id);
    record.set_u8(trade_record::STATUS, consts::STATUS_SETTLED);
    record.set_u8(trade_record::BUMP, bump);

    for party in [&buyer_data, &seller_data] {
        party.add_u64(reputation::TRADES, 1)?;
        party.add_u64(reputation::ENERGY_WH, trade.energy_wh)?;
        party.add_u64(reputation::VOLUME, amount)?;
        participant::adjust_score(party, consts::REPUTATION_REWARD as i64);
    }
    escrow_data.add_u64(escrow::PAID, amount)?;
    escrows::consume_reservation(&escrow_data, amount);
    a.market_data.add_u64(market::TRADES_SETTLED, 1)?;
    a.market_data.add_u64(market::VOLUME, amount)?;

    let mut payload = [0u8; ev::SIZE];
    put_u64(&mut payload, 0, event::TRADE_SETTLED);
    put(&mut payload, ev::MARKET, &market_key.0);
    put_u64(&mut payload, ev::AUCTION_ID, trade.auction_id);
    put_u64(&mut payload, ev::TRADE_ID, trade.trade_id);
    put(&mut payload, ev::BUYER, &buyer.0);
    put(&mut payload, ev::SELLER, &seller.0);
    put(&mut payload, ev::DEVICE_ID, &trade.device_id.to_le_bytes());
    put_u64(&mut payload, ev::PRICE_PER_KWH, trade.price_per_kwh);
    put_u64(&mut payload, ev::ENERGY_WH, trade.energy_wh);
    put_u64(&mut payload, ev::AMOUNT, amount);
    put_u64(&mut payload, ev::SETTLED_AT, now as u64);
    put(&mut payload, ev::EVIDENCE_HASH, &trade.evidence_hash);
    sys::log_data(&payload);
    Ok(())
}

fn copy32(data: &Data, offset: usize, bytes: &[u8; 32]) {
    let mut i = 0;
    while i < 32 {
        data.set_u8(offset + i, bytes[i]);
        i += 1;
    }
}

/// Event payload writers (Borsh is packed: these offsets are not aligned).
#[inline(always)]
pub fn put(buffer: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(slot) = buffer.get_mut(offset..offset + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

#[inline(always)]

pub fn put_u64(buffer: &mut [u8], offset: usize, value: u64) {
    put(buffer, offset, &value.to_le_bytes());
}
