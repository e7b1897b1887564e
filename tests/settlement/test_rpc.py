"""RpcCluster against the JSON-RPC test double (HTTP on loopback over LiteSVM), with real
signed SPL token transfers; and the circuit breaker, alone and in front of the double."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator

import pytest
from solders.account import Account
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.token import ID as TOKEN_PROGRAM
from solders.transaction import VersionedTransaction

from hub.settlement.breaker import (
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    GuardedCluster,
)
from hub.settlement.cluster import ClusterUnavailableError
from hub.settlement.rpc import RpcCluster, RpcRequestError, safe_endpoint
from tests.settlement.rpc_double import BLOCKHASH_LIFETIME_BLOCKS, RpcDouble

pytestmark = pytest.mark.timeout(30)

SECRET = "k3y-do-not-log"


# -- a tiny SPL token world, written straight into the SVM --------------------------------


def _mint_data(decimals: int, supply: int) -> bytes:
    # COption<authority> none, supply, decimals, initialized, COption<freeze> none
    return bytes(36) + struct.pack("<QBB", supply, decimals, 1) + bytes(36)


def _token_account_data(mint: Pubkey, owner: Pubkey, amount: int) -> bytes:
    # mint, owner, amount, delegate none, state=initialized, is_native none, delegated 0,
    # close authority none: 165 bytes
    data = bytes(mint) + bytes(owner) + struct.pack("<Q", amount)
    data += bytes(36) + b"\x01" + bytes(12) + bytes(8) + bytes(36)
    assert len(data) == 165
    return data


class TokenWorld:
    """A payer, a mint, and two token accounts (seller 1,000,000 units, buyer 0)."""

    def __init__(self, double: RpcDouble) -> None:
        svm = double.svm
        self.payer = Keypair()
        svm.airdrop(self.payer.pubkey(), 10_000_000_000)
        self.mint = Keypair().pubkey()
        self.seller = Keypair().pubkey()
        self.buyer = Keypair().pubkey()
        rent = svm.minimum_balance_for_rent_exemption(165)
        svm.set_account(self.mint, Account(rent, _mint_data(6, 1_000_000), TOKEN_PROGRAM))
        for account, amount in ((self.seller, 1_000_000), (self.buyer, 0)):
            data = _token_account_data(self.mint, self.payer.pubkey(), amount)
            svm.set_account(account, Account(rent, data, TOKEN_PROGRAM))

    def transfer(self, blockhash: Hash, amount: int) -> VersionedTransaction:
        """A signed SPL Transfer seller -> buyer (instruction 3), the payer as owner."""
        instruction = Instruction(
            TOKEN_PROGRAM,
            bytes([3]) + struct.pack("<Q", amount),
            [
                AccountMeta(self.seller, is_signer=False, is_writable=True),
                AccountMeta(self.buyer, is_signer=False, is_writable=True),
                AccountMeta(self.payer.pubkey(), is_signer=True, is_writable=False),
            ],
        )
        message = MessageV0.try_compile(self.payer.pubkey(), [instruction], [], blockhash)
        return VersionedTransaction(message, [self.payer])


@pytest.fixture
async def double() -> AsyncIterator[RpcDouble]:
    async with RpcDouble() as running:
        yield running


@pytest.fixture
async def cluster(double: RpcDouble) -> AsyncIterator[RpcCluster]:
    rpc = RpcCluster(f"{double.url}/?api-key={SECRET}", name="localnet", timeout_s=2.0)
    yield rpc
    await rpc.close()


@pytest.fixture
def world(double: RpcDouble) -> TokenWorld:
    return TokenWorld(double)


# -- the happy path -----------------------------------------------------------------------


async def test_simulate_send_and_confirm_a_token_transfer(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    blockhash = await cluster.latest_blockhash()
    assert blockhash.blockhash == double.svm.latest_blockhash()
    assert (
        blockhash.last_valid_block_height
        == (await cluster.block_height()) + BLOCKHASH_LIFETIME_BLOCKS
    )

    transaction = world.transfer(blockhash.blockhash, 250_000)
    err, units = await cluster.simulate(transaction)
    assert err is None and units > 0
    assert await cluster.token_balance(world.buyer) == 0  # simulation changed nothing

    signature = await cluster.send(transaction)
    assert signature == transaction.signatures[0]
    [state] = await cluster.signature_states([signature])
    assert state.confirmation == "confirmed" and state.err is None
    assert state.slot == double.slot
    assert await cluster.token_balance(world.buyer) == 250_000
    assert await cluster.token_balance(world.seller) == 750_000

    double.advance_blocks(32)
    [state] = await cluster.signature_states([signature])
    assert state.confirmation == "finalized"

    await cluster.send(transaction)  # sending the same transaction again is harmless
    assert await cluster.token_balance(world.buyer) == 250_000


async def test_a_refused_transfer_is_reported_with_the_nodes_error(
    cluster: RpcCluster, world: TokenWorld
) -> None:
    blockhash = await cluster.latest_blockhash()
    too_much = world.transfer(blockhash.blockhash, 2_000_000)
    err, _units = await cluster.simulate(too_much)
    assert err == {"InstructionError": [0, {"Custom": 1}]}  # spl-token InsufficientFunds

    signature = await cluster.send(too_much)  # lands, with its error (the fee is paid)
    [state] = await cluster.signature_states([signature])
    assert state.confirmation == "confirmed"
    assert state.err == {"InstructionError": [0, {"Custom": 1}]}
    assert await cluster.token_balance(world.buyer) == 0


# -- dropped, expired, re-signed: paid exactly once -------------------------------------------


async def test_dropped_transaction_expires_and_a_resigned_copy_lands_once(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    first_hash = await cluster.latest_blockhash()
    first = world.transfer(first_hash.blockhash, 100_000)
    double.drop_next_sends(1)
    signature = await cluster.send(first)  # accepted by the node, never executed
    assert (await cluster.signature_states([signature]))[0].confirmation is None

    # Not expired yet: the only safe move is to wait (or re-send the SAME transaction).
    double.advance_blocks(BLOCKHASH_LIFETIME_BLOCKS)
    assert await cluster.block_height() <= first_hash.last_valid_block_height
    double.advance_blocks(1)
    assert await cluster.block_height() > first_hash.last_valid_block_height
    assert (await cluster.signature_states([signature]))[0].confirmation is None
    # Expired and not landed: it can never land now, so re-signing cannot pay twice.
    err, _ = await cluster.simulate(first)
    assert err == "BlockhashNotFound"

    second_hash = await cluster.latest_blockhash()
    assert second_hash.blockhash != first_hash.blockhash
    second = world.transfer(second_hash.blockhash, 100_000)
    assert second.signatures[0] != signature
    await cluster.send(second)
    await cluster.send(first)  # a late copy of the expired one is dropped by the node
    states = await cluster.signature_states([signature, second.signatures[0]])
    assert [s.confirmation for s in states] == [None, "confirmed"]
    assert await cluster.token_balance(world.buyer) == 100_000
    assert double.executed == 1


async def test_a_lost_answer_is_found_by_its_signature_before_any_resend(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    blockhash = await cluster.latest_blockhash()
    transaction = world.transfer(blockhash.blockhash, 40_000)
    double.lose_answers_next(1)  # the node executes it, the answer is lost (503)
    with pytest.raises(ClusterUnavailableError):
        await cluster.send(transaction)

    [state] = await cluster.signature_states([transaction.signatures[0]])
    assert state.confirmation == "confirmed"  # it landed: nothing to re-send
    assert await cluster.token_balance(world.buyer) == 40_000
    assert double.executed == 1


async def test_a_lagging_node_is_not_believed_when_it_says_not_landed(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    """Behind a load balancer, "expired" may come from a fresh node and "not landed" from
    one that has not seen the block yet: re-signing on that would pay twice."""
    blockhash = await cluster.latest_blockhash()
    transaction = world.transfer(blockhash.blockhash, 70_000)
    double.lose_answers_next(1)
    with pytest.raises(ClusterUnavailableError):
        await cluster.send(transaction)  # it landed; the sender does not know
    double.advance_blocks(BLOCKHASH_LIFETIME_BLOCKS + 1)
    assert await cluster.block_height() > blockhash.last_valid_block_height

    double.lag_next(1, BLOCKHASH_LIFETIME_BLOCKS + 2)  # a node from before it landed
    with pytest.raises(ClusterUnavailableError, match="node is behind"):
        await cluster.signature_states([transaction.signatures[0]])
    [state] = await cluster.signature_states([transaction.signatures[0]])  # a current node
    assert state.confirmation == "finalized"
    assert await cluster.token_balance(world.buyer) == 70_000


# -- failures: unavailable versus refused --------------------------------------------------


@pytest.mark.parametrize("status", [503, 502, 429])
async def test_http_failures_mean_unavailable(
    double: RpcDouble, cluster: RpcCluster, status: int
) -> None:
    double.refuse_next(1, status=status)
    with pytest.raises(ClusterUnavailableError, match=f"getEpochInfo .*HTTP {status}"):
        await cluster.block_height()
    assert await cluster.block_height() == double.block_height  # the next call goes through


@pytest.mark.parametrize(
    ("code", "message"),
    [(-32005, "Node is behind by 42 slots"), (-32016, "Minimum context slot has not been reached")],
)
async def test_unhealthy_node_errors_mean_unavailable(
    double: RpcDouble, cluster: RpcCluster, code: int, message: str
) -> None:
    double.rpc_error_next(1, code, message)
    with pytest.raises(ClusterUnavailableError, match=message):
        await cluster.latest_blockhash()


async def test_a_refused_request_names_the_method_and_the_nodes_message(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    double.rpc_error_next(1, -32602, "Invalid param: WrongSize")
    with pytest.raises(RpcRequestError) as refused:
        await cluster.accounts_exist([world.buyer])
    assert refused.value.method == "getMultipleAccounts"
    assert refused.value.code == -32602
    assert "getMultipleAccounts" in str(refused.value)
    assert "Invalid param: WrongSize" in str(refused.value)
    assert not isinstance(refused.value, ClusterUnavailableError)


async def test_a_slow_node_times_out_as_unavailable(double: RpcDouble) -> None:
    rpc = RpcCluster(double.url, timeout_s=0.1)
    double.delay_s = 1.0
    try:
        with pytest.raises(ClusterUnavailableError, match=r"no answer within 0\.1 s"):
            await rpc.block_height()
    finally:
        await rpc.close()


async def test_an_unreachable_node_is_unavailable_and_the_key_never_shows(
    double: RpcDouble, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{double.url}/v2/{SECRET}?api-key={SECRET}"
    rpc = RpcCluster(url, timeout_s=1.0)
    assert rpc.endpoint == double.url and SECRET not in repr(rpc)
    caplog.set_level(logging.DEBUG)
    try:
        assert await rpc.block_height() == 0  # logged by httpx at INFO, redacted
        double.refuse_next(1)
        with pytest.raises(ClusterUnavailableError) as refused:
            await rpc.block_height()
        assert SECRET not in str(refused.value)
        await double.stop()
        with pytest.raises(ClusterUnavailableError) as unreachable:
            await rpc.block_height()
        assert SECRET not in str(unreachable.value)
        assert unreachable.value.__cause__ is None
    finally:
        await rpc.close()
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_a_bad_rpc_url_is_refused_without_showing_it() -> None:
    for url in (f"ftp://{SECRET}.example.net", f"{SECRET}", ""):
        with pytest.raises(ValueError) as refused:
            RpcCluster(url)
        assert SECRET not in str(refused.value)


def test_safe_endpoint_keeps_scheme_host_and_port_only() -> None:
    assert safe_endpoint(f"https://rpc.example.net/{SECRET}?api-key={SECRET}") == (
        "https://rpc.example.net"
    )
    assert safe_endpoint("http://127.0.0.1:8899") == "http://127.0.0.1:8899"


async def test_an_answer_that_is_not_a_json_rpc_response_means_unavailable(
    double: RpcDouble, cluster: RpcCluster
) -> None:
    double.refuse_next(1, status=200)  # HTTP 200 with a body that answers nothing
    with pytest.raises(ClusterUnavailableError, match="not a response to this request"):
        await cluster.latest_blockhash()


async def test_signature_states_of_many_signatures_are_chunked_and_ordered(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    blockhash = await cluster.latest_blockhash()
    landed = world.transfer(blockhash.blockhash, 1)
    await cluster.send(landed)
    unknown = [world.transfer(blockhash.blockhash, 2 + i).signatures[0] for i in range(299)]
    signatures = [*unknown[:260], landed.signatures[0], *unknown[260:]]
    states = await cluster.signature_states(signatures)
    assert [i for i, s in enumerate(states) if s.confirmation] == [260]
    assert double.calls["getSignatureStatuses"] == 2  # 256 + 44: the node allows 256


# -- accounts and balances ----------------------------------------------------------------


async def test_accounts_exist_over_many_addresses_is_chunked_and_ordered(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    addresses = [Keypair().pubkey() for _ in range(250)]
    existing = {3, 99, 100, 101, 249}
    for index in existing:
        double.svm.airdrop(addresses[index], 1_000_000)
    exists = await cluster.accounts_exist(addresses)
    assert [i for i, present in enumerate(exists) if present] == sorted(existing)
    assert double.calls["getMultipleAccounts"] == 3  # 100 + 100 + 50: the node allows 100
    assert await cluster.accounts_exist([]) == []


async def test_token_balance_of_a_missing_account_is_zero_and_of_a_wallet_is_an_error(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    assert await cluster.token_balance(Keypair().pubkey()) == 0
    with pytest.raises(RpcRequestError, match="not a Token account"):
        await cluster.token_balance(world.payer.pubkey())  # exists, but a wallet
    assert await cluster.token_balance(world.seller) == 1_000_000


# -- priority fees ------------------------------------------------------------------------


async def test_priority_fee_is_a_high_percentile_of_non_zero_fees_for_the_writable_accounts(
    double: RpcDouble, cluster: RpcCluster, world: TokenWorld
) -> None:
    writable = [world.seller, world.buyer]
    assert await cluster.priority_fee(writable) == 0  # no fees seen at all
    double.prioritization_fees = [(slot, 0) for slot in range(100, 140)]
    assert await cluster.priority_fee(writable) == 0  # only zero fees
    fees = [0] * 30 + list(range(1_000, 11_000, 1_000))  # ten non-zero: 1,000 .. 10,000
    double.prioritization_fees = list(enumerate(fees, start=200))
    assert await cluster.priority_fee(writable) == 9_000  # p90 of the non-zero ones
    assert double.fee_requests[-1] == [str(world.seller), str(world.buyer)]

    capped = RpcCluster(double.url, fee_percentile=100, max_priority_fee_micro_lamports=5_000)
    try:
        assert await capped.priority_fee(writable) == 5_000
        many = [Keypair().pubkey() for _ in range(200)]
        await capped.priority_fee(many)
        assert [len(r) for r in double.fee_requests[-2:]] == [128, 72]  # the node allows 128
    finally:
        await capped.close()


# -- the circuit breaker, alone (a clock driven by hand) --------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_n_failures_and_backs_off_exponentially_with_a_cap() -> None:
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=3, base_cooldown_s=1.0, max_cooldown_s=5.0)
    breaker = CircuitBreaker(policy, clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert (breaker.opened_at, breaker.next_try) == (1_000.0, 1_001.0)
    assert not breaker.allow() and breaker.total_refused == 1

    cooldowns = []
    for _ in range(4):  # every failed probe re-opens for longer: 2, 4, then capped at 5
        clock.now = breaker.next_try
        assert breaker.state is BreakerState.HALF_OPEN
        assert breaker.allow()  # the probe
        assert not breaker.allow()  # only one probe at a time
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN
        cooldowns.append(breaker.next_try - clock.now)
    assert cooldowns == [2.0, 4.0, 5.0, 5.0]

    clock.now = breaker.next_try
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    snapshot = breaker.snapshot()
    assert snapshot["failures"] == 0 and snapshot["next_try"] is None
    assert snapshot["total_openings"] == 5 and snapshot["total_failures"] == 7
    # Closed again: it takes the full threshold (and the base cool-down) to open again.
    for _ in range(3):
        breaker.record_failure()
    assert breaker.next_try == clock.now + 1.0


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2), FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


async def test_a_cancelled_probe_frees_the_probe_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1), clock)
    breaker.record_failure()
    clock.now = breaker.next_try or 0.0

    async def cancelled() -> None:
        raise KeyboardInterrupt  # a BaseException that says nothing about the cluster

    with pytest.raises(KeyboardInterrupt):
        await breaker.guarded(cancelled)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()


# -- the circuit breaker in front of the double -----------------------------------------------


async def test_guarded_cluster_sends_nothing_while_open_then_probes_and_closes(
    double: RpcDouble, cluster: RpcCluster
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, base_cooldown_s=10.0), clock)
    guarded = GuardedCluster(cluster, breaker)
    double.refuse_next(3)
    for _ in range(3):
        with pytest.raises(ClusterUnavailableError):
            await guarded.block_height()
    assert breaker.state is BreakerState.OPEN
    sent = double.http_requests
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            await guarded.latest_blockhash()
    assert double.http_requests == sent  # refused at once: no request reached the node

    clock.now += 10.0
    assert breaker.state is BreakerState.HALF_OPEN
    double.refuse_next(1)  # the probe fails: open again, for twice as long
    with pytest.raises(ClusterUnavailableError):
        await guarded.block_height()
    assert breaker.state is BreakerState.OPEN and breaker.next_try == clock.now + 20.0

    clock.now += 20.0
    assert await guarded.block_height() == double.block_height  # the probe succeeds
    assert breaker.state is BreakerState.CLOSED
    assert double.http_requests == sent + 2


async def test_a_refused_request_does_not_count_against_the_node(
    double: RpcDouble, cluster: RpcCluster
) -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1), FakeClock())
    double.rpc_error_next(1, -32602, "Invalid param")
    with pytest.raises(RpcRequestError):
        await GuardedCluster(cluster, breaker).block_height()
    assert breaker.state is BreakerState.CLOSED
