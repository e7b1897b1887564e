//! Disputes: open_dispute (the trade's buyer or seller, before the record's deadline, once)
//! and resolve_dispute (market authority only: refund and reputation penalty).

use crate::account::{Input, Reader};
use crate::cpi;
use crate::escrow as escrows;
use crate::interface::{
    consts, disc, err, escrow, ev_dispute_opened, ev_dispute_resolved, event, market, reputation,
    trade_record,
};
use crate::market as markets;
use crate::participant;
use crate::settle::{put, put_u64};
use crate::sys::{self, ProgramResult};

/// Accounts: disputer (signer), market, trade_record, disputer_reputation. No args.
pub fn open_dispute(input: &Input, args: &mut Reader) -> ProgramResult {
    args.finish()?;
    let [disputer, market_account, record_account, disputer_rep, ..] = input.accounts else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    disputer.require_signer()?;
    record_account.require_writable()?;
    disputer_rep.require_writable()?;
    markets::load(input, market_account)?;
    let record = record_account.load(&input.program_id, disc::TRADE_RECORD, trade_record::SIZE)?;
    if record.key(trade_record::MARKET) != market_account.key() {
        return Err(err::MARKET_MISMATCH);
    }
    let by = if disputer.key() == record.key(trade_record::BUYER) {
        consts::DISPUTED_BY_BUYER
    } else if disputer.key() == record.key(trade_record::SELLER) {
        consts::DISPUTED_BY_SELLER
    } else {
        return Err(err::NOT_A_PARTY);
    };
    let rep = participant::load(input, disputer_rep, market_account.key(), disputer.key())?;
    if record.u8(trade_record::STATUS) != consts::STATUS_SETTLED {
        return Err(err::DISPUTE_NOT_ALLOWED);
    }
    if sys::unix_timestamp()? > record.i64(trade_record::DISPUTE_DEADLINE) {
        return Err(err::DISPUTE_WINDOW_CLOSED);
    }
    record.set_u8(trade_record::STATUS, consts::STATUS_DISPUTED);
    record.set_u8(trade_record::DISPUTED_BY, by);
    rep.set_u32(
        reputation::DISPUTES_OPENED,
        rep.u32(reputation::DISPUTES_OPENED).saturating_add(1),
    );

    let mut payload = [0u8; ev_dispute_opened::SIZE];
    put_u64(&mut payload, 0, event::DISPUTE_OPENED);
    put(
        &mut payload,
        ev_dispute_opened::MARKET,
        &market_account.key().0,
    );
    put_u64(
        &mut payload,
        ev_dispute_opened::AUCTION_ID,
        record.u64(trade_record::AUCTION_ID),
    );
    put_u64(
        &mut payload,
        ev_dispute_opened::TRADE_ID,
        record.u64(trade_record::TRADE_ID),
    );
    put(&mut payload, ev_dispute_opened::BY, &disputer.key().0);
    sys::log_data(&payload);
    Ok(())
}

/// Accounts: authority (signer), market, trade_record, buyer_reputation, seller_reputation,
/// buyer_escrow, buyer_vault, authority_token_account, payment_mint, token_program.
/// Args: refund_amount (0 = the dispute was unfounded).
pub fn resolve_dispute(input: &Input, args: &mut Reader) -> ProgramResult {
    let refund = args.u64()?;
    args.finish()?;
    let [authority, market_account, record_account, buyer_rep, seller_rep, buyer_escrow, buyer_vault, authority_token, mint, token_program, ..] =
        input.accounts
    else {
        return Err(err::NOT_ENOUGH_ACCOUNTS);
    };
    authority.require_signer()?;
    record_account.require_writable()?;
    buyer_rep.require_writable()?;
    seller_rep.require_writable()?;
    let market_data = markets::load(input, market_account)?;
    authority.require_key(market_data.key(market::AUTHORITY), err::UNAUTHORIZED)?;
    let record = record_account.load(&input.program_id, disc::TRADE_RECORD, trade_record::SIZE)?;
    if record.key(trade_record::MARKET) != market_account.key() {
        return Err(err::MARKET_MISMATCH);
    }
    if record.u8(trade_record::STATUS) != consts::STATUS_DISPUTED {
        return Err(err::NO_OPEN_DISPUTE);
    }
    let buyer = participant::load(
        input,
        buyer_rep,
        market_account.key(),
        record.key(trade_record::BUYER),
    )?;
    let seller = participant::load(
        input,
        seller_rep,
        market_account.key(),
        record.key(trade_record::SELLER),
    )?;
    if refund > record.u64(trade_record::AMOUNT) {
        return Err(err::REFUND_TOO_LARGE);
    }

    if refund > 0 {
        // The seller was at fault: the authority makes the buyer whole into its vault.
        buyer_escrow.require_writable()?;
        buyer_vault.require_writable()?;
        authority_token.require_writable()?;
        let decimals = markets::check_payment_accounts(&market_data, mint, token_program)?;
        let escrow_data = escrows::load(input, buyer_escrow, market_account.key())?;
        if escrow_data.key(escrow::AGGREGATOR) != record.key(trade_record::BUYER) {
            return Err(err::PARTY_MISMATCH);
        }
        escrows::vault_balance(&escrow_data, buyer_vault, &market_data)?;
        cpi::transfer_checked(
            token_program,
            authority_token,
            mint,
            buyer_vault,
            authority,
            refund,
            decimals,
            None,
        )?;
        escrow_data.add_u64(escrow::REFUNDED, refund)?;
        penalise(&seller);
        record.set_u64(trade_record::REFUNDED, refund);
        record.set_u8(trade_record::STATUS, consts::STATUS_REFUNDED);
    } else {
        // Unfounded: the party who opened it pays in reputation.
        let disputer = if record.u8(trade_record::DISPUTED_BY) == consts::DISPUTED_BY_BUYER {
            &buyer
        } else {
            &seller
        };
        penalise(disputer);
        record.set_u8(trade_record::STATUS, consts::STATUS_UPHELD);
    }

    let mut payload = [0u8; ev_dispute_resolved::SIZE];
    put_u64(&mut payload, 0, event::DISPUTE_RESOLVED);
    put(
        &mut payload,
        ev_dispute_resolved::MARKET,
        &market_account.key().0,
    );
    put_u64(
        &mut payload,
        ev_dispute_resolved::AUCTION_ID,
        record.u64(trade_record::AUCTION_ID),
    );
    put_u64(
        &mut payload,
        ev_dispute_resolved::TRADE_ID,
        record.u64(trade_record::TRADE_ID),
    );
    put_u64(&mut payload, ev_dispute_resolved::REFUND_AMOUNT, refund);
    sys::log_data(&payload);
    Ok(())
}

fn penalise(party: &crate::account::Data) {
    party.set_u32(
        reputation::DISPUTES_LOST,
        party.u32(reputation::DISPUTES_LOST).saturating_add(1),
    );
    participant::adjust_score(party, -(consts::DISPUTE_PENALTY as i64));
}
