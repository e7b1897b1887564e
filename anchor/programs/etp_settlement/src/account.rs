//! The runtime's input buffer (sBPF v0 "aligned" serialisation) as typed views, and the
//! account checks every instruction composes (the sealevel-attacks checklist lives here:
//! signer, writable, owner, discriminator + exact size, PDA, token account state).
//!
//! Buffer layout: u64 account count; per account either a duplicate marker (index of the
//! first occurrence + 7 bytes padding) or: dup 0xff, is_signer, is_writable, executable,
//! 4 bytes padding, key[32], owner[32], lamports u64, data_len u64, data, 10 KiB realloc
//! space, padding to 8, rent_epoch u64. Then u64 instruction-data length, the data, and
//! the program id.

use core::mem::MaybeUninit;

use crate::interface::{err, ids};
use crate::sys::{Error, ProgramResult, Pubkey, SolAccountInfo};

const MAX_PERMITTED_DATA_INCREASE: usize = 10 * 1024;
pub const MAX_ACCOUNTS: usize = 64;
const NON_DUP_MARKER: u8 = 0xff;

/// One account in the input buffer. Copies of it (duplicates) see the same bytes.
#[derive(Clone, Copy)]
pub struct Account {
    header: *mut u8,
    rent_epoch: u64,
}

impl Account {
    #[inline(always)]
    pub fn key(&self) -> &Pubkey {
        unsafe { &*(self.header.add(8) as *const Pubkey) }
    }
    #[inline(always)]
    pub fn owner(&self) -> &Pubkey {
        unsafe { &*(self.header.add(40) as *const Pubkey) }
    }
    #[inline(always)]
    pub fn is_signer(&self) -> bool {
        unsafe { *self.header.add(1) != 0 }
    }
    #[inline(always)]
    pub fn is_writable(&self) -> bool {
        unsafe { *self.header.add(2) != 0 }
    }
    #[inline(always)]
    pub fn lamports(&self) -> u64 {
        unsafe { *(self.header.add(72) as *const u64) }
    }
    /// Current data length (the runtime rewrites it after a CPI that allocates).
    #[inline(always)]
    pub fn data_len(&self) -> usize {
        unsafe { *(self.header.add(80) as *const u64) as usize }
    }
    #[inline(always)]
    fn data_ptr(&self) -> *mut u8 {
        unsafe { self.header.add(88) }
    }
    /// Same account (same address), whatever position it was passed at.
    #[inline(always)]
    pub fn same(&self, other: &Account) -> bool {
        self.key() == other.key()
    }

    /// The C account-info structure a cross-program invocation needs.
    pub fn info(&self) -> SolAccountInfo {
        SolAccountInfo {
            key: self.key(),
            lamports: unsafe { self.header.add(72) as *mut u64 },
            data_len: self.data_len() as u64,
            data: self.data_ptr(),
            owner: unsafe { self.header.add(40) as *mut Pubkey },
            rent_epoch: self.rent_epoch,
            is_signer: self.is_signer(),
            is_writable: self.is_writable(),
            executable: unsafe { *self.header.add(3) != 0 },
        }
    }

    pub fn require_signer(&self) -> ProgramResult {
        if self.is_signer() {
            Ok(())
        } else {
            Err(err::MISSING_SIGNATURE)
        }
    }
    pub fn require_writable(&self) -> ProgramResult {
        if self.is_writable() {
            Ok(())
        } else {
            Err(err::NOT_WRITABLE)
        }
    }
    pub fn require_key(&self, expected: &Pubkey, code: Error) -> ProgramResult {
        if self.key() == expected {
            Ok(())
        } else {
            Err(code)
        }
    }

    /// The data of an account this program owns, of type `discriminator` and exactly
    /// `size` bytes: owner check + type check (no cosplay) in one place.
    #[inline(always)]
    pub fn load(
        &self,
        program_id: &Pubkey,
        discriminator: u64,
        size: usize,
    ) -> ProgramResult<Data> {
        if self.owner() != program_id {
            return Err(err::INVALID_ACCOUNT_OWNER);
        }
        if self.data_len() != size {
            return Err(err::INVALID_DISCRIMINATOR);
        }
        let data = Data {
            base: self.data_ptr(),
        };
        if data.u64(0) != discriminator {
            return Err(err::INVALID_DISCRIMINATOR);
        }
        Ok(data)
    }

    /// A view on freshly created account data (after `create_pda_account`).
    #[inline(always)]
    pub fn fresh(&self, size: usize) -> ProgramResult<Data> {
        if self.data_len() != size {
            return Err(err::ALREADY_INITIALIZED);
        }
        Ok(Data {
            base: self.data_ptr(),
        })
    }

    /// SPL Token / Token-2022 account: owned by `token_program`, initialised (not frozen),
    /// holding `mint`. Returns a view on its data (mint 0, owner 32, amount 64).
    #[inline(always)]
    pub fn token_account(&self, token_program: &Pubkey, mint: &Pubkey) -> ProgramResult<Data> {
        if self.owner() != token_program {
            return Err(err::INVALID_TOKEN_ACCOUNT);
        }
        if self.data_len() < TOKEN_ACCOUNT_SIZE {
            return Err(err::INVALID_TOKEN_ACCOUNT);
        }
        let data = Data {
            base: self.data_ptr(),
        };
        if data.key(0) != mint {
            return Err(err::INVALID_MINT);
        }
        if data.u8(TOKEN_ACCOUNT_STATE) != TOKEN_STATE_INITIALIZED {
            return Err(err::INVALID_TOKEN_ACCOUNT);
        }
        Ok(data)
    }

    /// The mint account: owned by `token_program`, initialised. Returns its decimals.
    #[inline(always)]
    pub fn mint_decimals(&self, token_program: &Pubkey) -> ProgramResult<u8> {
        if self.owner() != token_program || self.data_len() < MINT_SIZE {
            return Err(err::INVALID_MINT);
        }
        let data = Data {
            base: self.data_ptr(),
        };
        if data.u8(MINT_IS_INITIALIZED) != 1 {
            return Err(err::INVALID_MINT);
        }
        Ok(data.u8(MINT_DECIMALS))
    }
}

pub const TOKEN_ACCOUNT_SIZE: usize = 165;
pub const TOKEN_ACCOUNT_OWNER: usize = 32;
pub const TOKEN_ACCOUNT_AMOUNT: usize = 64;
const TOKEN_ACCOUNT_STATE: usize = 108;
const TOKEN_STATE_INITIALIZED: u8 = 1;
const MINT_SIZE: usize = 82;
const MINT_DECIMALS: usize = 44;
const MINT_IS_INITIALIZED: usize = 45;

/// Either token program is accepted for a market (the market then pins one).
pub fn is_token_program(key: &Pubkey) -> bool {
    *key == ids::TOKEN_PROGRAM || *key == ids::TOKEN_2022_PROGRAM
}

/// Typed access to account data at offsets the generated interface fixes. Offsets of
/// multi-byte fields are naturally aligned (the generator refuses any other layout) and
/// account data starts 8-byte aligned, so these are plain loads and stores. Callers get a
/// `Data` only after the account's size was checked against the layout.
#[derive(Clone, Copy)]
pub struct Data {
    base: *mut u8,
}

impl Data {
    #[inline(always)]
    pub fn u8(&self, offset: usize) -> u8 {
        unsafe { *self.base.add(offset) }
    }
    #[inline(always)]
    pub fn set_u8(&self, offset: usize, value: u8) {
        unsafe { *self.base.add(offset) = value }
    }
    #[inline(always)]
    pub fn u32(&self, offset: usize) -> u32 {
        unsafe { *(self.base.add(offset) as *const u32) }
    }
    #[inline(always)]
    pub fn set_u32(&self, offset: usize, value: u32) {
        unsafe { *(self.base.add(offset) as *mut u32) = value }
    }
    #[inline(always)]
    pub fn u64(&self, offset: usize) -> u64 {
        unsafe { *(self.base.add(offset) as *const u64) }
    }
    #[inline(always)]
    pub fn set_u64(&self, offset: usize, value: u64) {
        unsafe { *(self.base.add(offset) as *mut u64) = value }
    }
    #[inline(always)]
    pub fn i64(&self, offset: usize) -> i64 {
        self.u64(offset) as i64
    }
    #[inline(always)]
    pub fn set_i64(&self, offset: usize, value: i64) {
        self.set_u64(offset, value as u64)
    }
    #[inline(always)]
    pub fn key(&self, offset: usize) -> &Pubkey {
        unsafe { &*(self.base.add(offset) as *const Pubkey) }
    }
    #[inline(always)]
    pub fn set_key(&self, offset: usize, value: &Pubkey) {
        unsafe { *(self.base.add(offset) as *mut Pubkey) = *value }
    }
    /// Adds to a u64 counter, failing on overflow.
    pub fn add_u64(&self, offset: usize, value: u64) -> ProgramResult {
        let sum = self
            .u64(offset)
            .checked_add(value)
            .ok_or(err::AMOUNT_OVERFLOW)?;
        self.set_u64(offset, sum);
        Ok(())
    }
}

/// Everything the runtime passed: accounts (duplicates resolved), data, program id.
pub struct Input<'a> {
    pub program_id: Pubkey,
    pub accounts: &'a [Account],
    pub data: &'a [u8],
}

/// Parses the input buffer into `storage`; more than MAX_ACCOUNTS accounts is an error.
/// Slots past the account count stay uninitialised and are never read.
///
/// # Safety
/// `input` must be the buffer the runtime passed to `entrypoint`.
pub unsafe fn parse<'a>(
    input: *mut u8,
    storage: &'a mut [MaybeUninit<Account>; MAX_ACCOUNTS],
) -> ProgramResult<Input<'a>> {
    let count = *(input as *const u64) as usize;
    if count > MAX_ACCOUNTS {
        return Err(err::TOO_MANY_ACCOUNTS);
    }
    let slots = storage.as_mut_ptr() as *mut Account;
    let mut cursor = input.add(8);
    let mut i = 0;
    while i < count {
        let marker = *cursor;
        if marker != NON_DUP_MARKER {
            // A duplicate: the runtime names the first position of the same account.
            let original = marker as usize;
            if original >= i {
                return Err(err::DUPLICATE_ACCOUNT);
            }
            *slots.add(i) = *slots.add(original);
            cursor = cursor.add(8);
        } else {
            let data_len = *(cursor.add(80) as *const u64) as usize;
            let end = (88 + data_len + MAX_PERMITTED_DATA_INCREASE + 7) & !7;
            *slots.add(i) = Account {
                header: cursor,
                rent_epoch: *(cursor.add(end) as *const u64),
            };
            cursor = cursor.add(end + 8);
        }
        i += 1;
    }
    let data_len = *(cursor as *const u64) as usize;
    let data = core::slice::from_raw_parts(cursor.add(8), data_len);
    // The program id follows the data, aligned only if the data length is a multiple of 8.
    let program_id = core::ptr::read_unaligned(cursor.add(8 + data_len) as *const Pubkey);
    let accounts = core::slice::from_raw_parts(slots as *const Account, count);
    Ok(Input {
        program_id,
        accounts,
        data,
    })
}

/// Reads the instruction data field by field (Borsh, little-endian, unaligned).
pub struct Reader<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    pub fn new(data: &'a [u8], position: usize) -> Self {
        Reader { data, position }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> ProgramResult<*const u8> {
        let end = self
            .position
            .checked_add(n)
            .ok_or(err::INVALID_INSTRUCTION_DATA)?;
        if end > self.data.len() {
            return Err(err::INVALID_INSTRUCTION_DATA);
        }
        let at = unsafe { self.data.as_ptr().add(self.position) };
        self.position = end;
        Ok(at)
    }

    #[inline(always)]
    pub fn u8(&mut self) -> ProgramResult<u8> {
        Ok(unsafe { *self.take(1)? })
    }
    #[inline(always)]
    pub fn u32(&mut self) -> ProgramResult<u32> {
        Ok(u32::from_le(unsafe {
            core::ptr::read_unaligned(self.take(4)? as *const u32)
        }))
    }
    #[inline(always)]
    pub fn u64(&mut self) -> ProgramResult<u64> {
        Ok(u64::from_le(unsafe {
            core::ptr::read_unaligned(self.take(8)? as *const u64)
        }))
    }
    #[inline(always)]
    pub fn i64(&mut self) -> ProgramResult<i64> {
        Ok(self.u64()? as i64)
    }
    #[inline(always)]
    pub fn bool(&mut self) -> ProgramResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(err::INVALID_INSTRUCTION_DATA),
        }
    }
    #[inline(always)]
    pub fn key(&mut self) -> ProgramResult<Pubkey> {
        Ok(unsafe { core::ptr::read_unaligned(self.take(32)? as *const Pubkey) })
    }
    /// 32 raw bytes (a hash).
    #[inline(always)]
    pub fn bytes32(&mut self) -> ProgramResult<[u8; 32]> {
        Ok(unsafe { core::ptr::read_unaligned(self.take(32)? as *const [u8; 32]) })
    }
    /// All bytes consumed: trailing garbage is malformed input, not ignored.
    #[inline(always)]
    pub fn finish(&self) -> ProgramResult {
        if self.position == self.data.len() {
            Ok(())
        } else {
            Err(err::INVALID_INSTRUCTION_DATA)
        }
    }
}
