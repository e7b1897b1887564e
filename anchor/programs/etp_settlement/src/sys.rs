//! The runtime boundary: syscall declarations (C ABI, bound by name at load time), the C
//! structures they take, and thin safe wrappers. Nothing else in the crate is `extern`.

use crate::interface::err;

/// A 32-byte address, 8-byte aligned so that comparing two is four 64-bit loads.
/// Every `&Pubkey` in this crate points at an aligned location (the runtime's input buffer,
/// an aligned account-data offset, a constant, or a local copy).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Pubkey(pub [u8; 32]);

impl Pubkey {
    pub const fn zeroed() -> Self {
        Pubkey([0; 32])
    }

    #[inline(always)]
    fn words(&self) -> &[u64; 4] {
        // SAFETY: Pubkey is 32 bytes with 8-byte alignment.
        unsafe { &*(self as *const Pubkey as *const [u64; 4]) }
    }
}

impl PartialEq for Pubkey {
    #[inline(always)]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.words(), other.words());
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
    }
}

/// An error code returned to the runtime: never 0 (0 means success), so a
/// `Result<(), Error>` is one 64-bit register — BPF functions return at most that.
pub type Error = core::num::NonZeroU64;

/// Program result: Ok or a custom error code (Anchor numbering, see `interface::err`).
/// Helpers returning anything wider than 64 bits are `#[inline(always)]`: upstream BPF
/// cannot return two registers.
pub type ProgramResult<T = ()> = Result<T, Error>;

/// An error code as a constant (a zero code fails the build, not the program).
pub const fn error(code: u64) -> Error {
    match core::num::NonZeroU64::new(code) {
        Some(value) => value,
        None => panic!("error code 0 means success"),
    }
}

#[repr(C)]
pub struct SolBytes {
    pub addr: *const u8,
    pub len: u64,
}

#[repr(C)]
pub struct SolAccountMeta {
    pub pubkey: *const Pubkey,
    pub is_writable: bool,
    pub is_signer: bool,
}

#[repr(C)]
pub struct SolInstruction {
    pub program_id: *const Pubkey,
    pub accounts: *const SolAccountMeta,
    pub account_len: u64,
    pub data: *const u8,
    pub data_len: u64,
}

#[repr(C)]
pub struct SolAccountInfo {
    pub key: *const Pubkey,
    pub lamports: *mut u64,
    pub data_len: u64,
    pub data: *mut u8,
    pub owner: *mut Pubkey,
    pub rent_epoch: u64,
    pub is_signer: bool,
    pub is_writable: bool,
    pub executable: bool,
}

#[repr(C)]
pub struct SolSignerSeeds {
    pub addr: *const SolBytes,
    pub len: u64,
}

extern "C" {
    fn sol_log_(message: *const u8, len: u64);
    fn sol_log_data(fields: *const SolBytes, count: u64);
    fn sol_try_find_program_address(
        seeds: *const SolBytes,
        seeds_len: u64,
        program_id: *const Pubkey,
        address: *mut Pubkey,
        bump: *mut u8,
    ) -> u64;
    fn sol_invoke_signed_c(
        instruction: *const SolInstruction,
        account_infos: *const SolAccountInfo,
        account_infos_len: u64,
        signers_seeds: *const SolSignerSeeds,
        signers_seeds_len: u64,
    ) -> u64;
    fn sol_get_clock_sysvar(clock: *mut u8) -> u64;
    fn sol_get_return_data(data: *mut u8, length: u64, program_id: *mut Pubkey) -> u64;
    fn sol_get_rent_sysvar(rent: *mut u8) -> u64;
    pub fn abort() -> !;
}

/// Writes a message to the program log.
pub fn log(message: &str) {
    unsafe { sol_log_(message.as_ptr(), message.len() as u64) }
}

/// Logs one binary field (how Anchor's `emit!` publishes an event).
pub fn log_data(payload: &[u8]) {
    let field = SolBytes {
        addr: payload.as_ptr(),
        len: payload.len() as u64,
    };
    unsafe { sol_log_data(&field, 1) }
}

/// Seeds as the runtime wants them; at most 5 per address (ours use 4 plus the bump).
pub struct Seeds<const N: usize> {
    pub parts: [SolBytes; N],
}

impl<const N: usize> Seeds<N> {
    #[inline(always)]
    pub fn new(slices: [&[u8]; N]) -> Self {
        let mut parts = [const {
            SolBytes {
                addr: core::ptr::null(),
                len: 0,
            }
        }; N];
        let mut i = 0;
        while i < N {
            parts[i] = SolBytes {
                addr: slices[i].as_ptr(),
                len: slices[i].len() as u64,
            };
            i += 1;
        }
        Seeds { parts }
    }

    pub fn as_signer(&self) -> SolSignerSeeds {
        SolSignerSeeds {
            addr: self.parts.as_ptr(),
            len: N as u64,
        }
    }
}

/// The canonical program-derived address and bump (highest bump off the curve).
pub fn find_program_address<const N: usize>(
    seeds: &Seeds<N>,
    program_id: &Pubkey,
) -> ProgramResult<(Pubkey, u8)> {
    let mut address = Pubkey::zeroed();
    let mut bump = 0u8;
    let rc = unsafe {
        sol_try_find_program_address(
            seeds.parts.as_ptr(),
            N as u64,
            program_id,
            &mut address,
            &mut bump,
        )
    };
    if rc != 0 {
        return Err(err::INVALID_PDA);
    }
    Ok((address, bump))
}

/// Cross-program invocation; `signers` are the seed sets of PDAs this program signs for.
pub fn invoke_signed(
    instruction: &SolInstruction,
    infos: &[SolAccountInfo],
    signers: &[SolSignerSeeds],
) -> ProgramResult {
    let rc = unsafe {
        sol_invoke_signed_c(
            instruction,
            infos.as_ptr(),
            infos.len() as u64,
            signers.as_ptr(),
            signers.len() as u64,
        )
    };
    match core::num::NonZeroU64::new(rc) {
        Some(code) => Err(code),
        None => Ok(()),
    }
}

/// The return data of the last CPI as a u64, and the program that set it.
#[inline(always)]
pub fn return_data_u64() -> ProgramResult<(u64, Pubkey)> {
    let mut value = [0u8; 8];
    let mut program = Pubkey::zeroed();
    let length = unsafe { sol_get_return_data(value.as_mut_ptr(), 8, &mut program) };
    if length != 8 {
        return Err(err::INVALID_TOKEN_PROGRAM);
    }
    Ok((u64::from_le_bytes(value), program))
}

/// The cluster's unix time (Clock sysvar).
#[inline(always)]
pub fn unix_timestamp() -> ProgramResult<i64> {
    // slot, epoch_start_timestamp, epoch, leader_schedule_epoch, unix_timestamp
    let mut clock = [0u64; 5];
    let rc = unsafe { sol_get_clock_sysvar(clock.as_mut_ptr() as *mut u8) };
    if rc != 0 {
        return Err(err::INVALID_INSTRUCTION_DATA);
    }
    Ok(clock[4] as i64)
}

/// Lamports that make an account of `space` bytes rent-exempt. The Rent sysvar's
/// threshold is an f64; sBPF has no floating point, so an integral threshold (2.0 on every
/// cluster today, 1.0 after SIMD-0194) is decoded from its bits, anything else refused.
#[inline(always)]
pub fn minimum_balance(space: u64) -> ProgramResult<u64> {
    // lamports_per_byte_year u64, exemption_threshold f64, burn_percent u8 (+padding)
    let mut rent = [0u64; 3];
    let rc = unsafe { sol_get_rent_sysvar(rent.as_mut_ptr() as *mut u8) };
    if rc != 0 {
        return Err(err::RENT_SYSVAR_UNSUPPORTED);
    }
    let threshold = integral_f64(rent[1]).ok_or(err::RENT_SYSVAR_UNSUPPORTED)?;
    const ACCOUNT_STORAGE_OVERHEAD: u64 = 128;
    let bytes = ACCOUNT_STORAGE_OVERHEAD + space;
    Ok(bytes * rent[0] * threshold)
}

/// The integer value of an IEEE-754 double holding an integer in 1..=2^20, else None.
fn integral_f64(bits: u64) -> Option<u64> {
    if bits >> 63 != 0 {
        return None;
    }
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    if !(0..=20).contains(&exponent) {
        return None;
    }
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let shift = 52 - exponent as u64;
    if mantissa & ((1u64 << shift) - 1) != 0 {
        return None;
    }
    Some(mantissa >> shift)
}
