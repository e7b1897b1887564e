//! Participants: register_participant (battery owner with devices, or aggregator) creates a
//! Reputation PDA; the Reputation checks settlement and disputes rely on.

use crate::account::{Account, Data, Input, Reader};
use crate::cpi;
use crate::interface::{consts, disc, err, reputation};
use crate::market as markets;
use crate::sys::{self, ProgramResult, Pubkey, Seeds};

pub const SEED: &[u8] = b"reputation";

/// A Reputation of this market (owner, type, market checked) belonging to `owner`.
#[inline(always)]
pub fn load(
    input: &Input,
    account: &Account,
    market_key: &Pubkey,
    owner: &Pubkey,
) -> ProgramResult<Data> {
    let data = account.load(&input.program_id, disc::REPUTATION, reputation::SIZE)?;
    if data.key(reputation::MARKET) != market_key {
        return Err(err::MARKET_MISMATCH);
    }
    if data.key(reputation::OWNER) != owner {
        return Err(err::PARTY_MISMATCH);
    }
    Ok(data)
}

/// A Reputation of this market with role `role`, whoever owns it.
#[inline(always)]
pub fn load_role(
    input: &Input,
    account: &Account,
    market_key: &Pubkey,
    role: u64,
) -> ProgramResult<Data> {
    let data = account.load(&input.program_id, disc::REPUTATION, reputation::SIZE)?;
    if data.key(reputation::MARKET) != market_key {
        return Err(err::MARKET_MISMATCH);
    }
    if data.u8(reputation::ROLE) as u64 != role {
        return Err(err::INVALID_ROLE);
    }
    Ok(data)
}

/// True when `device_id` is one of the seller's registered devices.
pub fn has_device(data: &Data, device_id: u32) -> bool {
    let count = data.u8(reputation::DEVICE_COUNT) as usize;
    let mut i = 0;
    while i < count && i < consts::MAX_DEVICES as usize {
        if data.u32(reputation::DEVICE_IDS + 4 * i) == device_id {
            return true;
        }
        i += 1;
    }
    false
}

/// Score change (saturating: a score is a signal, never a reason to fail a settlement).
pub fn adjust_score(data: &Data, delta: i64) {
    data.set_i64(
        reputation::SCORE,
        data.i64(reputation::SCORE).saturating_add(delta),
    );
}

/// Accounts: owner (signer, payer), market, reputation (PDA ["reputation", market, owner]),
/// system_program. Args: role (0 battery owner, 1 aggregator), device_ids (Vec<u32>).
pub fn register_participant(input: &Input, args: &mut Reader) -> ProgramResult {
    let [owner, market_account, reputation_account, system_program, ..] = input.accounts else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    let role = args.u8()? as u64;
    let device_count = args.u32()? as usize;
    let mut devices = [0u32; consts::MAX_DEVICES as usize];
    if device_count > devices.len() {
        return Err(err::INVALID_DEVICES);
    }
    let mut i = 0;
    while i < device_count {
        let id = args.u32()?;
        if id == 0 || devices[..i].contains(&id) {
            return Err(err::INVALID_DEVICES);
        }
        devices[i] = id;
        i += 1;
    }
    args.finish()?;
    match role {
        consts::ROLE_SELLER if device_count == 0 => return Err(err::INVALID_DEVICES),
        consts::ROLE_SELLER => {}
        consts::ROLE_BUYER if device_count != 0 => return Err(err::INVALID_DEVICES),
        consts::ROLE_BUYER => {}
        _ => return Err(err::INVALID_ROLE),
    }
    owner.require_signer()?;
    owner.require_writable()?;
    reputation_account.require_writable()?;
    markets::check_system_program(system_program)?;
    markets::load_active(input, market_account)?;

    let seeds = Seeds::new([SEED, &market_account.key().0[..], &owner.key().0[..]]);
    let (address, bump) = sys::find_program_address(&seeds, &input.program_id)?;
    reputation_account.require_key(&address, err::INVALID_PDA)?;
    let bump_seed = [bump];
    let signer = Seeds::new([
        SEED,
        &market_account.key().0[..],
        &owner.key().0[..],
        &bump_seed[..],
    ]);
    cpi::create_pda_account(
        owner,
        reputation_account,
        reputation::SIZE as u64,
        &input.program_id,
        &signer,
    )?;

    let data = reputation_account.fresh(reputation::SIZE)?;
    data.set_u64(0, disc::REPUTATION);
    data.set_key(reputation::MARKET, market_account.key());
    data.set_key(reputation::OWNER, owner.key());
    let mut i = 0;
    while i < device_count {
        data.set_u32(reputation::DEVICE_IDS + 4 * i, devices[i]);
        i += 1;
    }
    data.set_u8(reputation::ROLE, role as u8);
    data.set_u8(reputation::DEVICE_COUNT, device_count as u8);
    data.set_u8(reputation::BUMP, bump);
    Ok(())
}
