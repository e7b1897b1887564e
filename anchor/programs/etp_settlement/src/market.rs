//! Market administration: initialize_market, rotate_settler, pause_market, and the
//! Market account checks every other instruction starts with.

use crate::account::{self, Account, Data, Input, Reader};
use crate::cpi;
use crate::interface::{consts, disc, err, ids, market};
use crate::sys::{self, ProgramResult, Pubkey, Seeds};

pub const SEED: &[u8] = b"market";

/// The Market account: owned by this program, of type Market.
#[inline(always)]
pub fn load(input: &Input, account: &Account) -> ProgramResult<Data> {
    account.load(&input.program_id, disc::MARKET, market::SIZE)
}

/// The Market, refusing a paused one.
#[inline(always)]
pub fn load_active(input: &Input, account: &Account) -> ProgramResult<Data> {
    let data = load(input, account)?;
    if data.u8(market::PAUSED) != 0 {
        return Err(err::MARKET_PAUSED);
    }
    Ok(data)
}

/// The mint and token program passed match the ones the market pinned; the mint is a
/// live mint of that program. Returns the mint's decimals.
#[inline(always)]
pub fn check_payment_accounts(
    data: &Data,
    mint: &Account,
    token_program: &Account,
) -> ProgramResult<u8> {
    token_program.require_key(data.key(market::TOKEN_PROGRAM), err::INVALID_TOKEN_PROGRAM)?;
    mint.require_key(data.key(market::PAYMENT_MINT), err::INVALID_MINT)?;
    mint.mint_decimals(token_program.key())
}

pub fn check_system_program(account: &Account) -> ProgramResult {
    account.require_key(&ids::SYSTEM_PROGRAM, err::INVALID_SYSTEM_PROGRAM)
}

/// Accounts: authority (signer, payer), market (PDA ["market", authority]), payment_mint,
/// token_program, system_program. Args: settler, dispute_window_seconds.
pub fn initialize_market(input: &Input, args: &mut Reader) -> ProgramResult {
    let [authority, market_account, mint, token_program, system_program, ..] = input.accounts
    else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    let settler = args.key()?;
    let window = args.i64()?;
    args.finish()?;
    authority.require_signer()?;
    authority.require_writable()?;
    market_account.require_writable()?;
    check_system_program(system_program)?;
    if !account::is_token_program(token_program.key()) {
        return Err(err::INVALID_TOKEN_PROGRAM);
    }
    let decimals = mint.mint_decimals(token_program.key())?;
    if window < 1 || window as u64 > consts::MAX_DISPUTE_WINDOW_SECONDS {
        return Err(err::INVALID_DISPUTE_WINDOW);
    }
    let (address, bump) = sys::find_program_address(
        &Seeds::new([SEED, &authority.key().0[..]]),
        &input.program_id,
    )?;
    market_account.require_key(&address, err::INVALID_PDA)?;
    let bump_seed = [bump];
    let seeds = Seeds::new([SEED, &authority.key().0[..], &bump_seed[..]]);
    cpi::create_pda_account(
        authority,
        market_account,
        market::SIZE as u64,
        &input.program_id,
        &seeds,
    )?;

    let data = market_account.fresh(market::SIZE)?;
    data.set_u64(0, disc::MARKET);
    data.set_key(market::AUTHORITY, authority.key());
    data.set_key(market::SETTLER, &settler);
    data.set_key(market::PAYMENT_MINT, mint.key());
    data.set_key(market::TOKEN_PROGRAM, token_program.key());
    data.set_i64(market::DISPUTE_WINDOW_SECONDS, window);
    data.set_u8(market::BUMP, bump);
    data.set_u8(market::MINT_DECIMALS, decimals);
    Ok(())
}

/// The market authority signed and the market is writable; returns the market's data.
#[inline(always)]
fn authority_only(input: &Input) -> ProgramResult<Data> {
    let [authority, market_account, ..] = input.accounts else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    authority.require_signer()?;
    market_account.require_writable()?;
    let data = load(input, market_account)?;
    authority.require_key(data.key(market::AUTHORITY), err::UNAUTHORIZED)?;
    Ok(data)
}

/// Accounts: authority (signer), market. Args: new_settler.
pub fn rotate_settler(input: &Input, args: &mut Reader) -> ProgramResult {
    let new_settler: Pubkey = args.key()?;
    args.finish()?;
    let data = authority_only(input)?;
    data.set_key(market::SETTLER, &new_settler);
    Ok(())
}

/// Accounts: authority (signer), market. Args: paused.
pub fn pause_market(input: &Input, args: &mut Reader) -> ProgramResult {
    let paused = args.bool()?;
    args.finish()?;
    let data = authority_only(input)?;
    data.set_u8(market::PAUSED, paused as u8);
    Ok(())
}
