"""The server's proof that it holds the token, checked by the client before it sends the token."""

import pytest

from vibe_blender.core import server_proof


def test_only_the_token_answers_the_challenge():
    challenge = server_proof.new_challenge()
    proof = server_proof.server_proof("the-token", challenge, 8765)
    assert server_proof.proof_ok("the-token", challenge, 8765, proof)
    assert not server_proof.proof_ok("another-token", challenge, 8765, proof)
    assert not server_proof.proof_ok("the-token", server_proof.new_challenge(), 8765, proof)  # a replayed answer


def test_a_proof_holds_for_the_port_it_was_made_on_only():
    """A relay on port 8765 that passes the challenge to the real server on 9000 gets 9000's proof."""
    challenge = server_proof.new_challenge()
    relayed = server_proof.server_proof("the-token", challenge, 9000)
    assert not server_proof.proof_ok("the-token", challenge, 8765, relayed)


def test_challenges_are_fresh():
    assert len({server_proof.new_challenge() for _ in range(100)}) == 100


@pytest.mark.parametrize("proof", [None, 12, ["x"], {"proof": "x"}, "", "0" * 64])
def test_anything_else_a_server_sends_is_no_proof(proof):
    assert not server_proof.proof_ok("the-token", server_proof.new_challenge(), 8765, proof)


def test_a_challenge_outside_the_format_is_never_proved():
    challenge = "short"
    proof = server_proof.server_proof("the-token", challenge, 8765)
    assert not server_proof.proof_ok("the-token", challenge, 8765, proof)
