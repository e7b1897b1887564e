//! Aggregator escrow: open_escrow (Escrow PDA + vault token account owned by it), fund,
//! withdraw, and the settler's reservations (reserve_funds, release_funds). Tokens leave a
//! vault only by a transfer this program signs for: to a battery owner in settle_trades, or
//! back to the aggregator in withdraw — and withdraw never touches reserved funds.

use crate::account::{Account, Data, Input, Reader, TOKEN_ACCOUNT_AMOUNT};
use crate::cpi;
use crate::interface::{consts, disc, err, escrow, market};
use crate::market as markets;
use crate::participant;
use crate::sys::{self, ProgramResult, Pubkey, Seeds};

pub const SEED: &[u8] = b"escrow";
pub const VAULT_SEED: &[u8] = b"vault";

/// An Escrow of this market (owner, type, market checked).
#[inline(always)]
pub fn load(input: &Input, account: &Account, market_key: &Pubkey) -> ProgramResult<Data> {
    let data = account.load(&input.program_id, disc::ESCROW, escrow::SIZE)?;
    if data.key(escrow::MARKET) != market_key {
        return Err(err::MARKET_MISMATCH);
    }
    Ok(data)
}

/// The vault passed is the escrow's, a live token account of the market's mint; returns
/// its balance.
#[inline(always)]
pub fn vault_balance(
    escrow_data: &Data,
    vault: &Account,
    market_data: &Data,
) -> ProgramResult<u64> {
    vault.require_key(escrow_data.key(escrow::VAULT), err::INVALID_TOKEN_ACCOUNT)?;
    let token = vault.token_account(
        market_data.key(market::TOKEN_PROGRAM),
        market_data.key(market::PAYMENT_MINT),
    )?;
    Ok(token.u64(TOKEN_ACCOUNT_AMOUNT))
}

/// Accounts: aggregator (signer, payer), market, reputation (the aggregator's), escrow
/// (PDA ["escrow", market, aggregator]), vault (PDA ["vault", market, aggregator]),
/// payment_mint, token_program, system_program. Args: max_price_per_kwh.
pub fn open_escrow(input: &Input, args: &mut Reader) -> ProgramResult {
    let [aggregator, market_account, reputation, escrow_account, vault, mint, token_program, system_program, ..] =
        input.accounts
    else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    let max_price = args.u64()?;
    args.finish()?;
    aggregator.require_signer()?;
    aggregator.require_writable()?;
    escrow_account.require_writable()?;
    vault.require_writable()?;
    markets::check_system_program(system_program)?;
    let market_data = markets::load_active(input, market_account)?;
    markets::check_payment_accounts(&market_data, mint, token_program)?;
    let rep = participant::load(input, reputation, market_account.key(), aggregator.key())?;
    if rep.u8(crate::interface::reputation::ROLE) as u64 != consts::ROLE_BUYER {
        return Err(err::INVALID_ROLE);
    }
    if max_price == 0 {
        return Err(err::ZERO_AMOUNT);
    }

    let market_key = &market_account.key().0[..];
    let aggregator_key = &aggregator.key().0[..];
    let (escrow_address, escrow_bump) = sys::find_program_address(
        &Seeds::new([SEED, market_key, aggregator_key]),
        &input.program_id,
    )?;
    escrow_account.require_key(&escrow_address, err::INVALID_PDA)?;
    let (vault_address, vault_bump) = sys::find_program_address(
        &Seeds::new([VAULT_SEED, market_key, aggregator_key]),
        &input.program_id,
    )?;
    vault.require_key(&vault_address, err::INVALID_PDA)?;

    let escrow_bump_seed = [escrow_bump];
    let escrow_seeds = Seeds::new([SEED, market_key, aggregator_key, &escrow_bump_seed[..]]);
    cpi::create_pda_account(
        aggregator,
        escrow_account,
        escrow::SIZE as u64,
        &input.program_id,
        &escrow_seeds,
    )?;
    let vault_bump_seed = [vault_bump];
    let vault_seeds = Seeds::new([VAULT_SEED, market_key, aggregator_key, &vault_bump_seed[..]]);
    // Token-2022 mints with extensions need larger accounts: ask the token program.
    let vault_size = cpi::token_account_size(token_program, mint)?;
    cpi::create_pda_account(
        aggregator,
        vault,
        vault_size,
        token_program.key(),
        &vault_seeds,
    )?;
    cpi::initialize_token_account(token_program, vault, mint, &escrow_address)?;

    let data = escrow_account.fresh(escrow::SIZE)?;
    data.set_u64(0, disc::ESCROW);
    data.set_key(escrow::MARKET, market_account.key());
    data.set_key(escrow::AGGREGATOR, aggregator.key());
    data.set_key(escrow::VAULT, vault.key());
    data.set_u64(escrow::MAX_PRICE_PER_KWH, max_price);
    data.set_u8(escrow::BUMP, escrow_bump);
    data.set_u8(escrow::VAULT_BUMP, vault_bump);
    Ok(())
}

/// The aggregator's own escrow and vault, with the market's mint and token program.
struct Checked {
    market: Data,
    escrow: Data,
    decimals: u8,
    balance: u64,
}

#[inline(always)]

fn check_owner_accounts(input: &Input) -> ProgramResult<Checked> {
    let [aggregator, market_account, escrow_account, vault, other, mint, token_program, ..] =
        input.accounts
    else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    aggregator.require_signer()?;
    escrow_account.require_writable()?;
    vault.require_writable()?;
    other.require_writable()?;
    let market = markets::load(input, market_account)?;
    let decimals = markets::check_payment_accounts(&market, mint, token_program)?;
    let escrow = load(input, escrow_account, market_account.key())?;
    aggregator.require_key(escrow.key(escrow::AGGREGATOR), err::UNAUTHORIZED)?;
    let balance = vault_balance(&escrow, vault, &market)?;
    if other.same(vault) {
        return Err(err::DUPLICATE_ACCOUNT);
    }
    Ok(Checked {
        market,
        escrow,
        decimals,
        balance,
    })
}

/// Accounts: aggregator (signer), market, escrow, vault, source (the aggregator's token
/// account), payment_mint, token_program. Args: amount.
pub fn fund(input: &Input, args: &mut Reader) -> ProgramResult {
    let amount = args.u64()?;
    args.finish()?;
    let checked = check_owner_accounts(input)?;
    if checked.market.u8(market::PAUSED) != 0 {
        return Err(err::MARKET_PAUSED);
    }
    if amount == 0 {
        return Err(err::ZERO_AMOUNT);
    }
    let [aggregator, _, _, vault, source, mint, token_program, ..] = input.accounts else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    cpi::transfer_checked(
        token_program,
        source,
        mint,
        vault,
        aggregator,
        amount,
        checked.decimals,
        None,
    )?;
    checked.escrow.add_u64(escrow::DEPOSITED, amount)
}

/// Accounts: aggregator (signer), market, escrow, vault, destination, payment_mint,
/// token_program. Args: amount. Allowed while the market is paused: funds are never
/// locked in by an operator.
pub fn withdraw(input: &Input, args: &mut Reader) -> ProgramResult {
    let amount = args.u64()?;
    args.finish()?;
    let checked = check_owner_accounts(input)?;
    if amount == 0 {
        return Err(err::ZERO_AMOUNT);
    }
    if amount > checked.balance {
        return Err(err::INSUFFICIENT_ESCROW);
    }
    let reserved = active_reservation(&checked.escrow, sys::unix_timestamp()?);
    if amount > checked.balance.saturating_sub(reserved) {
        return Err(err::FUNDS_RESERVED);
    }
    let [_, market_account, escrow_account, vault, destination, mint, token_program, ..] =
        input.accounts
    else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    let bump = [checked.escrow.u8(escrow::BUMP)];
    let seeds = Seeds::new([
        SEED,
        &market_account.key().0[..],
        &checked.escrow.key(escrow::AGGREGATOR).0[..],
        &bump[..],
    ]);
    let signer = seeds.as_signer();
    cpi::transfer_checked(
        token_program,
        vault,
        mint,
        destination,
        escrow_account,
        amount,
        checked.decimals,
        Some(&signer),
    )?;
    checked.escrow.add_u64(escrow::WITHDRAWN, amount)
}

/// The reserved amount still in force at `now` (a lapsed reservation reserves nothing).
#[inline(always)]
pub fn active_reservation(escrow_data: &Data, now: i64) -> u64 {
    if now < escrow_data.i64(escrow::RESERVED_UNTIL) {
        escrow_data.u64(escrow::RESERVED)
    } else {
        0
    }
}

/// Settlement consumed `amount` of whatever was reserved.
#[inline(always)]
pub fn consume_reservation(escrow_data: &Data, amount: u64) {
    escrow_data.set_u64(
        escrow::RESERVED,
        escrow_data.u64(escrow::RESERVED).saturating_sub(amount),
    );
}

/// The settler of this market signed; returns (market, escrow) data.
#[inline(always)]
fn settler_only(input: &Input) -> ProgramResult<(Data, Data)> {
    let [settler, market_account, escrow_account, ..] = input.accounts else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    settler.require_signer()?;
    escrow_account.require_writable()?;
    let market_data = markets::load(input, market_account)?;
    settler.require_key(market_data.key(market::SETTLER), err::UNAUTHORIZED)?;
    let escrow_data = load(input, escrow_account, market_account.key())?;
    Ok((market_data, escrow_data))
}

/// Accounts: settler (signer), market, escrow, vault. Args: amount. Adds `amount` to the
/// reservation (a lapsed one starts again from zero) and extends it to now +
/// RESERVATION_SECONDS; the reservation cannot exceed the vault's balance.
pub fn reserve_funds(input: &Input, args: &mut Reader) -> ProgramResult {
    let amount = args.u64()?;
    args.finish()?;
    let (market_data, escrow_data) = settler_only(input)?;
    if market_data.u8(market::PAUSED) != 0 {
        return Err(err::MARKET_PAUSED);
    }
    let [_, _, _, vault, ..] = input.accounts else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    if amount == 0 {
        return Err(err::ZERO_AMOUNT);
    }
    let balance = vault_balance(&escrow_data, vault, &market_data)?;
    let now = sys::unix_timestamp()?;
    let total = active_reservation(&escrow_data, now)
        .checked_add(amount)
        .ok_or(err::AMOUNT_OVERFLOW)?;
    if total > balance {
        return Err(err::INSUFFICIENT_ESCROW);
    }
    escrow_data.set_u64(escrow::RESERVED, total);
    escrow_data.set_i64(
        escrow::RESERVED_UNTIL,
        now.saturating_add(consts::RESERVATION_SECONDS as i64),
    );
    Ok(())
}

/// Accounts: settler (signer), market, escrow. Args: amount (more than reserved releases all).
pub fn release_funds(input: &Input, args: &mut Reader) -> ProgramResult {
    let amount = args.u64()?;
    args.finish()?;
    let (_, escrow_data) = settler_only(input)?;
    consume_reservation(&escrow_data, amount);
    Ok(())
}
