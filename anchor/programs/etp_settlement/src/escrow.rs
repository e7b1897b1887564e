//! Aggregator escrow: open_escrow (Escrow PDA + vault token account owned by it), fund,
//! withdraw. Tokens leave a vault only by a transfer this program signs for: to a battery
//! owner in settle_trades, or back to the aggregator in withdraw.

use crate::account::{Account, Data, Input, Reader, TOKEN_ACCOUNT_AMOUNT, TOKEN_ACCOUNT_SIZE};
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
pub fn vault_balance(escrow_data: &Data, vault: &Account, market_data: &Data) -> ProgramResult<u64> {
    vault.require_key(escrow_data.key(escrow::VAULT), err::INVALID_TOKEN_ACCOUNT)?;
    let token = vault.token_account(market_data.key(market::TOKEN_PROGRAM), market_data.key(market::PAYMENT_MINT))?;
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
    let (escrow_address, escrow_bump) =
        sys::find_program_address(&Seeds::new([SEED, market_key, aggregator_key]), &input.program_id)?;
    escrow_account.require_key(&escrow_address, err::INVALID_PDA)?;
    let (vault_address, vault_bump) =
        sys::find_program_address(&Seeds::new([VAULT_SEED, market_key, aggregator_key]), &input.program_id)?;
    vault.require_key(&vault_address, err::INVALID_PDA)?;

    let escrow_bump_seed = [escrow_bump];
    let escrow_seeds = Seeds::new([SEED, market_key, aggregator_key, &escrow_bump_seed[..]]);
    cpi::create_pda_account(aggregator, escrow_account, escrow::SIZE as u64, &input.program_id, &escrow_seeds)?;
    let vault_bump_seed = [vault_bump];
    let vault_seeds = Seeds::new([VAULT_SEED, market_key, aggregator_key, &vault_bump_seed[..]]);
    cpi::create_pda_account(aggregator, vault, TOKEN_ACCOUNT_SIZE as u64, token_program.key(), &vault_seeds)?;
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
    let [aggregator, market_account, escrow_account, vault, other, mint, token_program, ..] = input.accounts else {
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
    Ok(Checked { market, escrow, decimals, balance })
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
    cpi::transfer_checked(token_program, source, mint, vault, aggregator, amount, checked.decimals, None)?;
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
    let [_, market_account, escrow_account, vault, destination, mint, token_program, ..] = input.accounts else {
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
    cpi::transfer_checked(token_program, vault, mint, destination, escrow_account, amount, checked.decimals, Some(&signer))?;
    checked.escrow.add_u64(escrow::WITHDRAWN, amount)
}
