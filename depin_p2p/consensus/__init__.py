"""Epoch consensus: one Tendermint instance per epoch (pure core), its signer, its fuzz harness.

How a shell (the trio service, the simulator) drives it, per epoch::

    params = Params(network_id, epoch, prev_cert_hash, ValidatorSet.of(validators), me,
                    validate_value=..., timeouts=...)
    state, effects = transition.start(params, now_ms,
                                      lock=signer.lock(epoch), start_round=signer.resume_round(epoch))
    for env in signer.last_signed(epoch):      # after a restart: identical bytes, again
        broadcast(env); state, more = transition.on_message(state, env, now_ms)

then, one input at a time from one loop:

    transition.on_message(state, envelope, now_ms)   # proposal or vote, peer's or own
    transition.on_timeout(state, kind, round, now_ms)
    transition.on_value(state, round, value_bytes, now_ms)   # answer to BuildValue
    transition.on_certificate(state, certificate, now_ms)    # catch-up

and execute the returned effects in order:

    Broadcast(envelope)          send to every validator
    BuildValue(epoch, round)     build the epoch value, answer with on_value
    SignProposal / SignVote      env = signer.sign(msg, lock) (durable first), broadcast env,
                                 then feed env back with on_message
    ScheduleTimeout(epoch, kind, round, at_ms)
    Decide(certificate)          commit it with the ledger (one transaction), gossip it,
                                 start the next epoch with prev_cert_hash = certificate_hash(cert)
    ReportEvidence(evidence)     gossip it, include it in a later value

``Ignore``/``Reject`` raised by the handlers carry the codes to count; an old
epoch's ``wrong_epoch`` is the cue to send that peer our certificate.
"""
