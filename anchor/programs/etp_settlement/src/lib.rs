//! ETP settlement program: energy trades between battery owners (sellers) and aggregators
//! (buyers) are paid from aggregator escrow and recorded once each, on Solana.
//!
//! A plain `no_std` crate with its own entrypoint and no dependencies, exposing an
//! Anchor-compatible interface (8-byte discriminators, Borsh arguments, an Anchor 0.30 IDL in
//! anchor/idl/). It builds with `cargo build-sbf` and with the Debian route in
//! anchor/build.py; see anchor/README.md.

#![no_std]
// Keep LLVM from turning copy loops into memcpy calls of unknown length (upstream BPF
// cannot call memcpy; the runtime's sol_memcpy_ is bound only for fixed sizes).
#![no_builtins]
#![allow(clippy::missing_safety_doc)]

mod account;
mod cpi;
mod dispute;
mod escrow;
mod interface;
mod market;
mod participant;
mod settle;
mod sys;

use core::mem::MaybeUninit;

use account::{Account, Reader, MAX_ACCOUNTS};
use interface::{err, ix};
use sys::ProgramResult;

/// The runtime calls this with its serialised input; returns 0 or an error code
/// (custom codes start at 6000, as Anchor's do).
#[no_mangle]
pub unsafe extern "C" fn entrypoint(input: *mut u8) -> u64 {
    let mut storage = [const { MaybeUninit::<Account>::uninit() }; MAX_ACCOUNTS];
    match process(input, &mut storage) {
        Ok(()) => 0,
        Err(code) => code.get(),
    }
}

unsafe fn process(
    input: *mut u8,
    storage: &mut [MaybeUninit<Account>; MAX_ACCOUNTS],
) -> ProgramResult {
    let input = account::parse(input, storage)?;
    let mut args = Reader::new(input.data, 8);
    let discriminator = match input.data.get(..8) {
        Some(bytes) => u64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ]),
        None => return Err(err::UNKNOWN_INSTRUCTION),
    };
    match discriminator {
        ix::SETTLE_TRADES => settle::settle_trades(&input, &mut args),
        ix::INITIALIZE_MARKET => market::initialize_market(&input, &mut args),
        ix::REGISTER_PARTICIPANT => participant::register_participant(&input, &mut args),
        ix::OPEN_ESCROW => escrow::open_escrow(&input, &mut args),
        ix::FUND => escrow::fund(&input, &mut args),
        ix::WITHDRAW => escrow::withdraw(&input, &mut args),
        ix::RESERVE_FUNDS => escrow::reserve_funds(&input, &mut args),
        ix::RELEASE_FUNDS => escrow::release_funds(&input, &mut args),
        ix::OPEN_DISPUTE => dispute::open_dispute(&input, &mut args),
        ix::RESOLVE_DISPUTE => dispute::resolve_dispute(&input, &mut args),
        ix::ROTATE_SETTLER => market::rotate_settler(&input, &mut args),
        ix::PAUSE_MARKET => market::pause_market(&input, &mut args),
        _ => Err(err::UNKNOWN_INSTRUCTION),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    sys::log("etp_settlement: panic");
    unsafe { sys::abort() }
}
