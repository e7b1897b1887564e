//! Cross-program invocations: the System program (account creation) and SPL Token /
//! Token-2022 (`InitializeAccount3`, `TransferChecked`). The program id of every CPI is a
//! constant or the market's pinned token program, never an account the caller chose
//! unchecked (sealevel-attacks: arbitrary CPI).

use crate::account::{Account, TOKEN_ACCOUNT_SIZE};
use crate::interface::{err, ids};
use crate::sys::{
    self, ProgramResult, Pubkey, Seeds, SolAccountMeta, SolInstruction, SolSignerSeeds,
};

fn meta(account: &Account, is_writable: bool, is_signer: bool) -> SolAccountMeta {
    SolAccountMeta {
        pubkey: account.key(),
        is_writable,
        is_signer,
    }
}

fn system_call(
    data: &[u8],
    metas: &[SolAccountMeta],
    accounts: &[Account],
    signers: &[SolSignerSeeds],
) -> ProgramResult {
    let instruction = SolInstruction {
        program_id: &ids::SYSTEM_PROGRAM,
        accounts: metas.as_ptr(),
        account_len: metas.len() as u64,
        data: data.as_ptr(),
        data_len: data.len() as u64,
    };
    match accounts {
        [a] => sys::invoke_signed(&instruction, &[a.info()], signers),
        [a, b] => sys::invoke_signed(&instruction, &[a.info(), b.info()], signers),
        _ => Err(err::NOT_ENOUGH_ACCOUNTS),
    }
}

/// Creates `target` (a PDA of this program, `seeds` including its bump) with `space` bytes
/// owned by `owner`, paid by `payer`. Fails if the account already holds data or belongs
/// to a program: this is the "plain create" that makes every record a one-time nullifier.
/// Lamports someone sent to the address beforehand do not block creation (they are topped
/// up, then the account is allocated and assigned, all signed by the PDA).
pub fn create_pda_account<const N: usize>(
    payer: &Account,
    target: &Account,
    space: u64,
    owner: &Pubkey,
    seeds: &Seeds<N>,
) -> ProgramResult {
    if *target.owner() != ids::SYSTEM_PROGRAM || target.data_len() != 0 {
        return Err(err::ALREADY_INITIALIZED);
    }
    let rent = sys::minimum_balance(space)?;
    let signer = [seeds.as_signer()];
    let lamports = target.lamports();
    if lamports == 0 {
        let mut data = [0u8; 52];
        data[4..12].copy_from_slice(&rent.to_le_bytes());
        data[12..20].copy_from_slice(&space.to_le_bytes());
        data[20..52].copy_from_slice(&owner.0);
        let metas = [meta(payer, true, true), meta(target, true, true)];
        return system_call(&data, &metas, &[*payer, *target], &signer);
    }
    if lamports < rent {
        let mut data = [0u8; 12];
        data[0] = 2; // Transfer
        data[4..12].copy_from_slice(&(rent - lamports).to_le_bytes());
        let metas = [meta(payer, true, true), meta(target, true, false)];
        system_call(&data, &metas, &[*payer, *target], &[])?;
    }
    let mut allocate = [0u8; 12];
    allocate[0] = 8; // Allocate
    allocate[4..12].copy_from_slice(&space.to_le_bytes());
    let metas = [meta(target, true, true)];
    system_call(&allocate, &metas, &[*target], &signer)?;
    let mut assign = [0u8; 36];
    assign[0] = 1; // Assign
    assign[4..36].copy_from_slice(&owner.0);
    system_call(&assign, &metas, &[*target], &signer)
}

/// `InitializeAccount3` (tag 18): `account` holds `mint` for `owner`.
pub fn initialize_token_account(
    token_program: &Account,
    account: &Account,
    mint: &Account,
    owner: &Pubkey,
) -> ProgramResult {
    let mut data = [0u8; 33];
    data[0] = 18;
    data[1..33].copy_from_slice(&owner.0);
    let metas = [meta(account, true, false), meta(mint, false, false)];
    let instruction = SolInstruction {
        program_id: token_program.key(),
        accounts: metas.as_ptr(),
        account_len: 2,
        data: data.as_ptr(),
        data_len: data.len() as u64,
    };
    sys::invoke_signed(&instruction, &[account.info(), mint.info()], &[])
}

/// `GetAccountDataSize` (tag 21): the size of a token account for `mint`, including the
/// account extensions the mint requires (165 bytes for SPL Token and plain Token-2022 mints).
pub fn token_account_size(token_program: &Account, mint: &Account) -> ProgramResult<u64> {
    let data = [21u8];
    let metas = [meta(mint, false, false)];
    let instruction = SolInstruction {
        program_id: token_program.key(),
        accounts: metas.as_ptr(),
        account_len: 1,
        data: data.as_ptr(),
        data_len: 1,
    };
    sys::invoke_signed(&instruction, &[mint.info()], &[])?;
    let (returned, program) = sys::return_data_u64()?;
    if program != *token_program.key() || returned < TOKEN_ACCOUNT_SIZE as u64 {
        return Err(err::INVALID_TOKEN_PROGRAM);
    }
    Ok(returned)
}

/// `TransferChecked` (tag 12) of `amount` from `source` to `destination`, authorised by
/// `authority` — a transaction signer, or this program's PDA when `signer` holds its seeds.
/// Always inlined: it takes more arguments than a BPF call passes in registers (five).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn transfer_checked(
    token_program: &Account,
    source: &Account,
    mint: &Account,
    destination: &Account,
    authority: &Account,
    amount: u64,
    decimals: u8,
    signer: Option<&SolSignerSeeds>,
) -> ProgramResult {
    let mut data = [0u8; 10];
    data[0] = 12;
    data[1..9].copy_from_slice(&amount.to_le_bytes());
    data[9] = decimals;
    let metas = [
        meta(source, true, false),
        meta(mint, false, false),
        meta(destination, true, false),
        meta(authority, false, true),
    ];
    let instruction = SolInstruction {
        program_id: token_program.key(),
        accounts: metas.as_ptr(),
        account_len: 4,
        data: data.as_ptr(),
        data_len: data.len() as u64,
    };
    let infos = [
        source.info(),
        mint.info(),
        destination.info(),
        authority.info(),
    ];
    match signer {
        Some(seeds) => sys::invoke_signed(&instruction, &infos, core::slice::from_ref(seeds)),
        None => sys::invoke_signed(&instruction, &infos, &[]),
    }
}
