"""Deploys a program through the BPF Upgradeable Loader (buffer, write, deploy), in LiteSVM:
the embedded ledger's deployment (hub.settlement.embedded) and the tools' and tests' (anchor/).

The same three loader instructions a CLI `program deploy` sends: create a buffer account
owned by the loader, fill it in chunks that fit a 1,232-byte transaction, then
DeployWithMaxDataLen, which creates the program and its programdata account. The loader
verifies the ELF exactly as a cluster would (the executable is loaded with the real
sBPF loader rules).
"""

from __future__ import annotations

import struct
from typing import Any

from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction

__all__ = ["UPGRADEABLE_LOADER", "DeployError", "deploy_upgradeable", "send"]

UPGRADEABLE_LOADER = Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")
SYSVAR_RENT = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
SYSVAR_CLOCK = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")

BUFFER_METADATA_SIZE = 37  # enum tag u32 + Option<Pubkey> authority
PROGRAM_SIZE = 36  # enum tag u32 + programdata address
PROGRAMDATA_METADATA_SIZE = 45  # tag u32 + slot u64 + Option<Pubkey>
WRITE_CHUNK = 900  # bytes per Write instruction: keeps the transaction under 1,232 bytes


class DeployError(Exception):
    """A loader transaction failed; carries the runtime's logs."""


def send(svm: Any, instructions: list[Instruction], payer: Keypair, *signers: Keypair) -> Any:
    """Sign with the latest blockhash and send; raise DeployError with logs on failure."""
    unique = {payer.pubkey(): payer}
    for signer in signers:
        unique[signer.pubkey()] = signer
    message = Message.new_with_blockhash(instructions, payer.pubkey(), svm.latest_blockhash())
    tx = Transaction(list(unique.values()), message, svm.latest_blockhash())
    result = svm.send_transaction(tx)
    if hasattr(result, "err"):
        raise DeployError(f"{result.err()}: {'; '.join(result.meta().logs())}")
    svm.expire_blockhash()  # a later transaction of the same bytes is a new one, not a replay
    return result


def deploy_upgradeable(svm: Any, payer: Keypair, program: Keypair, elf: bytes) -> Pubkey:
    """Deploy `elf` at `program`'s address with `payer` as upgrade authority."""
    loader = UPGRADEABLE_LOADER
    buffer = Keypair()
    buffer_size = BUFFER_METADATA_SIZE + len(elf)
    create_buffer = create_account(
        CreateAccountParams(
            from_pubkey=payer.pubkey(),
            to_pubkey=buffer.pubkey(),
            lamports=svm.minimum_balance_for_rent_exemption(buffer_size),
            space=buffer_size,
            owner=loader,
        )
    )
    initialize_buffer = Instruction(
        loader,
        struct.pack("<I", 0),
        [AccountMeta(buffer.pubkey(), False, True), AccountMeta(payer.pubkey(), False, False)],
    )
    send(svm, [create_buffer, initialize_buffer], payer, buffer)

    for offset in range(0, len(elf), WRITE_CHUNK):
        chunk = elf[offset : offset + WRITE_CHUNK]
        write = Instruction(
            loader,
            struct.pack("<IIQ", 1, offset, len(chunk)) + chunk,
            [AccountMeta(buffer.pubkey(), False, True), AccountMeta(payer.pubkey(), True, False)],
        )
        send(svm, [write], payer)

    programdata, _ = Pubkey.find_program_address([bytes(program.pubkey())], loader)
    create_program = create_account(
        CreateAccountParams(
            from_pubkey=payer.pubkey(),
            to_pubkey=program.pubkey(),
            lamports=svm.minimum_balance_for_rent_exemption(PROGRAM_SIZE),
            space=PROGRAM_SIZE,
            owner=loader,
        )
    )
    deploy = Instruction(
        loader,
        struct.pack("<IQ", 2, len(elf) * 2),
        [
            AccountMeta(payer.pubkey(), True, True),
            AccountMeta(programdata, False, True),
            AccountMeta(program.pubkey(), False, True),
            AccountMeta(buffer.pubkey(), False, True),
            AccountMeta(SYSVAR_RENT, False, False),
            AccountMeta(SYSVAR_CLOCK, False, False),
            AccountMeta(SYSTEM_PROGRAM, False, False),
            AccountMeta(payer.pubkey(), True, False),
        ],
    )
    send(svm, [create_program, deploy], payer, program)
    # A program deployed in slot N is visible from slot N + 1 (the loader's deployment
    # cooldown); move the clock on so the next transaction can call it.
    svm.warp_to_slot(svm.get_clock().slot + 1)
    return program.pubkey()
