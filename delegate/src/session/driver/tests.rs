//! Unit tests of the session driver with plain values: an in-memory session pair, a ledger,
//! and instants built from one base time. No runtime, no sockets, no sleeps.
use std::time::{Duration, Instant};

use tether_protocol::error::close;
use tether_protocol::message::{C2s, GoodbyeReason, RevokedReason, RotateOutcome, S2c, TaskKind};
use tether_protocol::session::ServerSession;
use uuid::Uuid;

use super::*;
use crate::rotation::{Ledger, PendingReplacement};
use crate::test_support::{session_pair, token};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A driver at `t0` with 5 s heartbeats (so 5 s pings and a 20 s idle limit), the server side
/// of its session, and the ledger it decides with.
fn start(t0: Instant) -> (SessionDriver, ServerSession, Ledger) {
    let (client, server) = session_pair(&token());
    let ledger = Ledger::default();
    let settings = DriverSettings { heartbeat_secs: 5, apply_mode: "file", process_started: t0 - SECS(100) };
    let mut driver = SessionDriver::new(client, ledger.clone(), settings, t0);
    assert!(matches!(driver.poll_action(), Some(Action::RefreshHealth)), "health first");
    (driver, server, ledger)
}

fn actions(driver: &mut SessionDriver) -> Vec<Action> {
    std::iter::from_fn(|| driver.poll_action()).collect()
}

/// The messages the manager would receive from these actions.
fn sent(server: &mut ServerSession, actions: &[Action]) -> Vec<C2s> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(bytes) => Some(server.decode(bytes).expect("a valid frame")),
            _ => None,
        })
        .collect()
}

fn ended(actions: &[Action]) -> Option<&Ended> {
    match actions.last() {
        Some(Action::End(ended)) => Some(ended),
        _ => None,
    }
}

fn close_code(actions: &[Action]) -> Option<u16> {
    actions.iter().find_map(|a| match a {
        Action::Close(code) => Some(*code),
        _ => None,
    })
}

fn rotate(server: &mut ServerSession, rotation_id: Uuid) -> Vec<u8> {
    let new = token();
    let sealed_token = server.seal_token(rotation_id, [5; 12], &new);
    server.encode(S2c::Rotate {
        seq: 0,
        rotation_id,
        token_id: new.id(),
        sealed_token,
        old_token_valid_until: 9,
    })
}

#[test]
fn heartbeats_are_due_every_interval_and_not_before() {
    let t0 = Instant::now();
    let (mut driver, mut server, _) = start(t0);
    assert_eq!(driver.poll_timeout(), Some(t0 + SECS(5)));
    driver.handle_timeout(t0 + SECS(4));
    assert!(actions(&mut driver).is_empty(), "nothing is due before the interval");

    let mut beats = 0;
    for tick in 1..=12u64 {
        let now = t0 + SECS(5 * tick);
        assert_eq!(driver.poll_timeout(), Some(now));
        // The manager answers something now and then, so the link stays alive.
        driver.handle_event(Event::Control, now);
        driver.handle_timeout(now);
        let done = actions(&mut driver);
        assert!(done.iter().any(|a| matches!(a, Action::Ping)));
        assert!(done.iter().any(|a| matches!(a, Action::RefreshHealth)));
        for message in sent(&mut server, &done) {
            let C2s::Heartbeat { status, .. } = message else { panic!("{message:?}") };
            assert_eq!(status.apply_mode.as_deref(), Some("file"));
            assert_eq!(status.uptime_secs, 100 + 5 * tick);
            beats += 1;
        }
    }
    assert_eq!(beats, 12, "one heartbeat per 5 s over 60 s");
}

#[test]
fn a_silent_manager_loses_the_session_after_the_idle_limit() {
    let t0 = Instant::now();
    let (mut driver, _server, _) = start(t0);
    for tick in 1..=4u64 {
        driver.handle_timeout(t0 + SECS(5 * tick));
        assert!(ended(&actions(&mut driver)).is_none(), "lost too early at {} s", 5 * tick);
    }
    driver.handle_timeout(t0 + SECS(25));
    let done = actions(&mut driver);
    assert_eq!(ended(&done), Some(&Ended::Lost("nothing received for 20 s".into())));
    assert!(!done.iter().any(|a| matches!(a, Action::Send(_))), "no heartbeat on a dead link");
    assert_eq!(driver.poll_timeout(), None);
}

#[test]
fn a_signed_revoked_is_fatal_and_closes_with_its_code() {
    for (reason, code) in [(RevokedReason::Revoked, close::REVOKED), (RevokedReason::Expired, close::EXPIRED)]
    {
        let t0 = Instant::now();
        let (mut driver, mut server, _) = start(t0);
        let frame =
            server.encode(S2c::Revoked { seq: 0, token_id: Uuid::new_v4(), reason, message: "gone".into() });
        driver.handle_frame(&frame, t0);
        let done = actions(&mut driver);
        assert_eq!(close_code(&done), Some(code));
        assert_eq!(ended(&done), Some(&Ended::Fatal { reason, message: "gone".into() }));
    }
}

#[test]
fn an_unsigned_or_garbage_frame_is_a_session_error_not_fatal() {
    let t0 = Instant::now();
    // A revoked signed with another session's key (as anyone on the path could forge it).
    let (_, mut stranger) = session_pair(&token());
    let forged = stranger.encode(S2c::Revoked {
        seq: 0,
        token_id: Uuid::new_v4(),
        reason: RevokedReason::Revoked,
        message: "forged".into(),
    });
    for frame in [forged, b"garbage".to_vec(), Vec::new()] {
        let (mut driver, _server, _) = start(t0);
        driver.handle_frame(&frame, t0);
        let done = actions(&mut driver);
        assert_eq!(close_code(&done), Some(close::PROTOCOL));
        match ended(&done) {
            Some(Ended::Lost(reason)) => assert!(reason.starts_with("protocol error"), "{reason}"),
            other => panic!("expected a loss, got {other:?}"),
        }
    }
}

#[test]
fn goodbye_closes_normally_and_reconnects() {
    let t0 = Instant::now();
    let (mut driver, mut server, _) = start(t0);
    driver.handle_frame(&server.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Restart }), t0);
    let done = actions(&mut driver);
    assert_eq!(close_code(&done), Some(close::NORMAL));
    assert_eq!(ended(&done), Some(&Ended::Goodbye(GoodbyeReason::Restart)));
    assert!(driver.is_ended());
}

#[test]
fn echo_tasks_are_answered_and_text_is_a_protocol_error() {
    let t0 = Instant::now();
    let (mut driver, mut server, _) = start(t0);
    let task_id = Uuid::new_v4();
    driver.handle_frame(
        &server.encode(S2c::Task { seq: 0, task_id, kind: TaskKind::Echo, payload: "p-1".into() }),
        t0,
    );
    let replies = sent(&mut server, &actions(&mut driver));
    assert!(matches!(&replies[..], [C2s::TaskResult { task_id: id, ok: true, payload, .. }]
        if *id == task_id && payload == "p-1"));

    driver.handle_event(Event::Text, t0);
    let done = actions(&mut driver);
    assert_eq!(close_code(&done), Some(close::PROTOCOL));
    assert!(matches!(ended(&done), Some(Ended::Lost(_))));
}

#[test]
fn a_rotate_is_handed_over_once_and_a_finished_one_is_acked_again_without_reapplying() {
    let t0 = Instant::now();
    let (mut driver, mut server, ledger) = start(t0);
    let rotation_id = Uuid::new_v4();
    driver.handle_frame(&rotate(&mut server, rotation_id), t0);
    let done = actions(&mut driver);
    assert!(matches!(&done[..], [Action::StartRotation(start)] if start.rotation_id == rotation_id));

    // Repeated while it runs: nothing, not a second start.
    driver.handle_frame(&rotate(&mut server, rotation_id), t0);
    assert!(actions(&mut driver).is_empty());

    // It finishes: acked once.
    ledger.finish(rotation_id, RotateOutcome::Manual, "deploy it by hand");
    let ack = RotationAck { rotation_id, outcome: RotateOutcome::Manual, detail: "deploy it by hand".into() };
    driver.handle_rotation_done(ack, AfterAck::Stay).unwrap();
    let acks = sent(&mut server, &actions(&mut driver));
    assert!(matches!(&acks[..], [C2s::RotateAck { outcome: RotateOutcome::Manual, .. }]));

    // Repeated after it finished (say, the ack was lost): acked again, not re-applied.
    driver.handle_frame(&rotate(&mut server, rotation_id), t0);
    let done = actions(&mut driver);
    assert!(!done.iter().any(|a| matches!(a, Action::StartRotation(_))), "re-applied");
    let acks = sent(&mut server, &done);
    assert!(
        matches!(&acks[..], [C2s::RotateAck { rotation_id: id, outcome: RotateOutcome::Manual, detail, .. }]
        if *id == rotation_id && detail == "deploy it by hand")
    );
}

#[test]
fn a_rotation_applied_in_place_acks_says_goodbye_and_switches() {
    let t0 = Instant::now();
    let (mut driver, mut server, _) = start(t0);
    let rotation_id = Uuid::new_v4();
    let ack = RotationAck { rotation_id, outcome: RotateOutcome::Applied, detail: "file".into() };
    driver.handle_rotation_done(ack, AfterAck::Switch).unwrap();
    let done = actions(&mut driver);
    let messages = sent(&mut server, &done);
    assert!(matches!(
        &messages[..],
        [
            C2s::RotateAck { outcome: RotateOutcome::Applied, .. },
            C2s::Goodbye { reason: GoodbyeReason::Replaced, .. },
        ]
    ));
    assert_eq!(close_code(&done), Some(close::NORMAL));
    assert_eq!(ended(&done), Some(&Ended::Switch));
}

#[test]
fn a_rotation_result_that_loses_the_race_with_a_close_is_handed_back_unsent() {
    let t0 = Instant::now();
    let (mut driver, mut server, _) = start(t0);
    let rotation_id = Uuid::new_v4();
    driver.handle_frame(&rotate(&mut server, rotation_id), t0);
    assert!(matches!(&actions(&mut driver)[..], [Action::StartRotation(_)]));
    // The manager says goodbye while the rotation runs …
    driver.handle_frame(&server.encode(S2c::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown }), t0);
    assert_eq!(ended(&actions(&mut driver)), Some(&Ended::Goodbye(GoodbyeReason::Shutdown)));
    // … and the result arrives after: nothing is sent on the closed session, the result comes
    // back to be acked on the next one.
    let ack = RotationAck { rotation_id, outcome: RotateOutcome::Applied, detail: "file".into() };
    assert_eq!(driver.handle_rotation_done(ack.clone(), AfterAck::Switch), Err(ack));
    assert!(actions(&mut driver).is_empty());

    // The other order: the result first, then the close; the ack goes out before the close.
    let (mut driver, mut server, _) = start(t0);
    let ack = RotationAck { rotation_id, outcome: RotateOutcome::Failed, detail: "no".into() };
    driver.handle_rotation_done(ack, AfterAck::Stay).unwrap();
    driver.handle_event(Event::Shutdown, t0);
    let done = actions(&mut driver);
    let messages = sent(&mut server, &done);
    assert!(matches!(
        &messages[..],
        [
            C2s::RotateAck { outcome: RotateOutcome::Failed, .. },
            C2s::Goodbye { reason: GoodbyeReason::Shutdown, .. },
        ]
    ));
    assert_eq!(ended(&done), Some(&Ended::Shutdown));
}

#[test]
fn a_revoke_during_a_rotation_is_still_fatal() {
    let t0 = Instant::now();
    let (mut driver, mut server, _) = start(t0);
    driver.handle_frame(&rotate(&mut server, Uuid::new_v4()), t0);
    assert!(matches!(&actions(&mut driver)[..], [Action::StartRotation(_)]));
    let frame = server.encode(S2c::Revoked {
        seq: 0,
        token_id: Uuid::new_v4(),
        reason: RevokedReason::Revoked,
        message: "rotated away".into(),
    });
    driver.handle_frame(&frame, t0 + SECS(1));
    assert!(matches!(
        ended(&actions(&mut driver)),
        Some(Ended::Fatal { reason: RevokedReason::Revoked, .. })
    ));
}

#[test]
fn shutdown_says_goodbye_or_acks_the_replacement_and_ignores_late_send_failures() {
    let t0 = Instant::now();
    let (mut driver, mut server, _) = start(t0);
    driver.handle_event(Event::Shutdown, t0);
    // The goodbye cannot be sent (the link is gone): still a shutdown, not a loss.
    driver.handle_event(Event::SendFailed("send failed: broken pipe".into()), t0);
    let done = actions(&mut driver);
    assert!(matches!(&sent(&mut server, &done)[..], [C2s::Goodbye { reason: GoodbyeReason::Shutdown, .. }]));
    assert_eq!(close_code(&done), Some(close::GOING_AWAY));
    assert_eq!(ended(&done), Some(&Ended::Shutdown));

    // Stopped by the successor container: the pending replacement is acked applied.
    let (mut driver, mut server, ledger) = start(t0);
    let rotation_id = Uuid::new_v4();
    ledger.set_pending(PendingReplacement { rotation_id, successor_id: "0123456789abcdef".into() });
    driver.handle_event(Event::Shutdown, t0);
    let messages = sent(&mut server, &actions(&mut driver));
    assert!(matches!(&messages[..], [
        C2s::RotateAck { rotation_id: id, outcome: RotateOutcome::Applied, detail, .. },
        C2s::Goodbye { reason: GoodbyeReason::Replaced, .. },
    ] if *id == rotation_id && detail == "replaced by container 0123456789ab"));
    assert!(!ledger.has_pending());
}

#[test]
fn a_failed_send_loses_the_session_and_drops_what_was_queued() {
    let t0 = Instant::now();
    let (mut driver, _server, _) = start(t0);
    driver.handle_event(Event::Control, t0 + SECS(5));
    driver.handle_timeout(t0 + SECS(5));
    assert!(matches!(driver.poll_action(), Some(Action::Ping)));
    driver.handle_event(Event::SendFailed("ping failed".into()), t0 + SECS(5));
    let done = actions(&mut driver);
    assert!(matches!(&done[..], [Action::End(Ended::Lost(reason))] if reason == "ping failed"));
}
