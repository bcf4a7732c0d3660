//! The session driver with plain values: a handshake in memory, `Instant`s made by adding
//! durations, no runtime, no socket and no sleep.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_protocol::error::close;
use tether_protocol::handshake::client::ClientHandshake;
use tether_protocol::handshake::server::ServerHandshake;
use tether_protocol::message::{
    C2s, DelegateInfo, GoodbyeReason, HeartbeatStatus, RevokedReason, RotateOutcome, S2c,
};
use tether_protocol::session::ClientSession;
use tether_protocol::Token;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Action, Driver, SocketEvent, MAX_PENDING_TASKS};
use crate::registry::{SessionCommand, TaskReply};

const HEARTBEAT: Duration = Duration::from_secs(30);
const NOW_UNIX: u64 = 1_700_000_000;
const MAX_FRAME: usize = 1_024;

/// The manager's driver and the delegate's session of one handshake, run in memory.
struct Pair {
    driver: Driver,
    delegate: ClientSession,
    token: Token,
    start: Instant,
}

fn pair(expires_at: Option<u64>) -> Pair {
    let token = Token::from_parts(Uuid::new_v4(), [7; 32]);
    let (server, challenge) = ServerHandshake::new([1; 32], NOW_UNIX, MAX_FRAME);
    let info =
        DelegateInfo { name: "d".into(), instance: Uuid::new_v4(), version: "0".into(), host: "h".into() };
    let client = ClientHandshake::new("acme", &token, info);
    let (awaiting, hello) = client.receive_challenge(&challenge, [2; 32], NOW_UNIX).unwrap();
    let verified = server.receive_hello(&hello, NOW_UNIX).unwrap().verify(Some(&token.key())).unwrap();
    let (session, welcome) = verified.accept(Uuid::new_v4(), HEARTBEAT.as_secs(), expires_at);
    let (delegate, _) = awaiting.receive_welcome(&welcome).unwrap();
    let start = Instant::now();
    let driver = Driver::new(session, token.id(), HEARTBEAT, expires_at, start, NOW_UNIX);
    Pair { driver, delegate, token, start }
}

fn actions(driver: &mut Driver) -> Vec<Action> {
    std::iter::from_fn(|| driver.poll_action()).collect()
}

fn heartbeat(delegate: &mut ClientSession) -> Vec<u8> {
    delegate.encode(C2s::Heartbeat { seq: 0, status: HeartbeatStatus { uptime_secs: 1, apply_mode: None } })
}

fn task(driver: &mut Driver, now: Instant) -> (Uuid, oneshot::Receiver<TaskReply>) {
    let (reply, rx) = oneshot::channel();
    let task_id = Uuid::new_v4();
    driver.handle_command(SessionCommand::Task { task_id, payload: "ping".into(), reply }, now);
    (task_id, rx)
}

/// The closing code of `actions`, which must be the last one and the only end.
fn close_code(actions: &[Action]) -> Option<(u16, &'static str)> {
    let ends = actions.iter().filter(|a| matches!(a, Action::Close(..) | Action::Ended)).count();
    assert!(ends <= 1, "one end at most: {actions:?}");
    match actions.last() {
        Some(Action::Close(code, reason)) => Some((*code, reason)),
        _ => None,
    }
}

/// The signed `revoked` fed before the close, as the delegate reads it.
fn fed_revoked(p: &mut Pair, actions: &[Action]) -> (Uuid, RevokedReason) {
    let fed: Vec<&Vec<u8>> =
        actions.iter().filter_map(|a| if let Action::Feed(f) = a { Some(f) } else { None }).collect();
    assert_eq!(fed.len(), 1, "{actions:?}");
    match p.delegate.decode(fed[0]) {
        Ok(S2c::Revoked { token_id, reason, .. }) => (token_id, reason),
        other => panic!("expected a signed revoked, got {other:?}"),
    }
}

#[test]
fn three_missed_heartbeat_intervals_close_with_4008() {
    let mut p = pair(None);
    let deadline = p.start + HEARTBEAT * 3;
    assert_eq!(p.driver.poll_timeout(), Some(deadline));
    p.driver.handle_timeout(deadline - Duration::from_millis(1));
    assert!(actions(&mut p.driver).is_empty(), "not yet");
    p.driver.handle_timeout(deadline);
    let out = actions(&mut p.driver);
    assert!(matches!(out.first(), Some(Action::CountHeartbeatTimeout)), "{out:?}");
    assert_eq!(close_code(&out), Some((close::PROTOCOL, "missed heartbeats")));
    assert_eq!(p.driver.poll_timeout(), None, "nothing more to wait for");
}

#[test]
fn a_heartbeat_a_rotate_ack_and_a_task_result_each_move_the_deadline() {
    let mut p = pair(None);
    let at = p.start + HEARTBEAT * 2;
    let frame = heartbeat(&mut p.delegate);
    p.driver.handle_frame(&frame, at);
    assert!(matches!(actions(&mut p.driver)[..], [Action::RecordHeartbeat]));
    assert_eq!(p.driver.poll_timeout(), Some(at + HEARTBEAT * 3));
    p.driver.handle_timeout(p.start + HEARTBEAT * 3);
    assert!(actions(&mut p.driver).is_empty(), "the old deadline passed harmlessly");

    let at = at + HEARTBEAT * 2;
    let rotation_id = Uuid::new_v4();
    let ack = p.delegate.encode(C2s::RotateAck {
        seq: 0,
        rotation_id,
        outcome: RotateOutcome::Applied,
        detail: "d".into(),
    });
    p.driver.handle_frame(&ack, at);
    match &actions(&mut p.driver)[..] {
        [Action::RotateAck { rotation_id: got, outcome: RotateOutcome::Applied, detail }] => {
            assert_eq!((*got, detail.as_str()), (rotation_id, "d"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.driver.poll_timeout(), Some(at + HEARTBEAT * 3));

    let (task_id, mut rx) = task(&mut p.driver, at);
    assert!(matches!(actions(&mut p.driver)[..], [Action::Send(_)]));
    let at = at + HEARTBEAT * 2;
    let result = p.delegate.encode(C2s::TaskResult { seq: 0, task_id, ok: true, payload: "pong".into() });
    p.driver.handle_frame(&result, at);
    match actions(&mut p.driver).pop() {
        Some(Action::TaskReply { reply, result }) => reply.send(result).unwrap(),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.try_recv().unwrap(), TaskReply { ok: true, payload: "pong".into() });
    assert_eq!(p.driver.poll_timeout(), Some(at + HEARTBEAT * 3));
    assert_eq!(p.driver.pending_tasks(), 0);
}

#[test]
fn expiry_mid_session_sends_a_signed_revoked_expired_then_closes_4004() {
    let mut p = pair(Some(NOW_UNIX + 100));
    // The heartbeat deadline (90 s) comes first; a heartbeat at 60 s moves it past expiry.
    assert_eq!(p.driver.poll_timeout(), Some(p.start + HEARTBEAT * 3));
    let frame = heartbeat(&mut p.delegate);
    p.driver.handle_frame(&frame, p.start + Duration::from_secs(60));
    actions(&mut p.driver);
    let expiry = p.start + Duration::from_secs(100);
    assert_eq!(p.driver.poll_timeout(), Some(expiry));
    p.driver.handle_timeout(expiry);
    let out = actions(&mut p.driver);
    assert!(matches!(out.first(), Some(Action::CountRevoked)), "{out:?}");
    assert_eq!(fed_revoked(&mut p, &out), (p.token.id(), RevokedReason::Expired));
    assert_eq!(close_code(&out), Some((close::EXPIRED, "token expired")));
}

#[test]
fn a_token_expired_before_the_session_started_is_due_at_once() {
    let p = pair(Some(NOW_UNIX - 5));
    assert_eq!(p.driver.poll_timeout(), Some(p.start));
}

#[test]
fn revoke_during_a_rotation_closes_4003_and_a_late_ack_changes_nothing() {
    let mut p = pair(None);
    let (rotation_id, successor) = (Uuid::new_v4(), Token::from_parts(Uuid::new_v4(), [9; 32]));
    let now = p.start + Duration::from_secs(1);
    let rotate =
        SessionCommand::Rotate { rotation_id, token: Arc::new(successor), valid_until: NOW_UNIX + 60 };
    p.driver.handle_command(rotate, now);
    let out = actions(&mut p.driver);
    let [Action::Send(frame)] = &out[..] else { panic!("{out:?}") };
    match p.delegate.decode(frame) {
        Ok(S2c::Rotate { rotation_id: got, token_id, sealed_token, .. }) => {
            assert_eq!(got, rotation_id);
            let opened = p.delegate.open_sealed_token(rotation_id, token_id, &sealed_token).unwrap();
            assert_eq!(opened.id(), token_id);
        }
        other => panic!("expected rotate, got {other:?}"),
    }
    let revoke = SessionCommand::Revoke { reason: RevokedReason::Revoked, message: "revoked".into() };
    p.driver.handle_command(revoke, now);
    let out = actions(&mut p.driver);
    assert_eq!(fed_revoked(&mut p, &out), (p.token.id(), RevokedReason::Revoked));
    assert_eq!(close_code(&out), Some((close::REVOKED, "token revoked")));
    let ack = p.delegate.encode(C2s::RotateAck {
        seq: 0,
        rotation_id,
        outcome: RotateOutcome::Applied,
        detail: String::new(),
    });
    p.driver.handle_frame(&ack, now);
    assert!(actions(&mut p.driver).is_empty(), "an ack after the close is not handed on");
}

#[test]
fn goodbye_from_the_delegate_closes_1000_and_drops_waiting_tasks() {
    let mut p = pair(None);
    let (_, mut rx) = task(&mut p.driver, p.start);
    actions(&mut p.driver);
    let bye = p.delegate.encode(C2s::Goodbye { seq: 0, reason: GoodbyeReason::Shutdown });
    p.driver.handle_frame(&bye, p.start);
    assert_eq!(close_code(&actions(&mut p.driver)), Some((close::NORMAL, "goodbye")));
    assert!(matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)), "the caller learns at once");
}

#[test]
fn commands_racing_a_close_produce_nothing() {
    let mut p = pair(Some(NOW_UNIX + 10));
    p.driver.handle_socket(SocketEvent::Closed);
    assert!(matches!(actions(&mut p.driver)[..], [Action::Ended]));
    assert!(p.driver.is_ended());
    let (_, mut rx) = task(&mut p.driver, p.start);
    p.driver.handle_command(
        SessionCommand::Revoke { reason: RevokedReason::Revoked, message: "r".into() },
        p.start,
    );
    p.driver.handle_command(SessionCommand::Shutdown, p.start);
    p.driver.handle_timeout(p.start + Duration::from_secs(3600));
    let frame = heartbeat(&mut p.delegate);
    p.driver.handle_frame(&frame, p.start);
    p.driver.handle_socket(SocketEvent::Text);
    assert!(actions(&mut p.driver).is_empty(), "nothing after the end");
    assert!(matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed)), "the task's caller is told");
    assert_eq!(p.driver.poll_timeout(), None);
}

#[test]
fn disconnect_and_shutdown_say_goodbye_then_close() {
    for (cmd, reason, code) in [
        (SessionCommand::Disconnect, GoodbyeReason::Disconnected, close::NORMAL),
        (SessionCommand::Shutdown, GoodbyeReason::Shutdown, close::GOING_AWAY),
    ] {
        let mut p = pair(None);
        p.driver.handle_command(cmd, p.start);
        let out = actions(&mut p.driver);
        let [Action::Feed(frame), Action::Close(got, _)] = &out[..] else { panic!("{out:?}") };
        assert_eq!(*got, code);
        assert!(matches!(p.delegate.decode(frame), Ok(S2c::Goodbye { reason: r, .. }) if r == reason));
    }
}

#[test]
fn a_bad_frame_closes_4008_and_an_oversized_one_1009() {
    // A tampered tag.
    let mut p = pair(None);
    let mut frame = heartbeat(&mut p.delegate);
    let last = frame.len() - 1;
    frame[last] ^= 1;
    p.driver.handle_frame(&frame, p.start);
    assert_eq!(close_code(&actions(&mut p.driver)), Some((close::PROTOCOL, "protocol error")));

    // A replay of a good frame.
    let mut p = pair(None);
    let frame = heartbeat(&mut p.delegate);
    p.driver.handle_frame(&frame, p.start);
    p.driver.handle_frame(&frame, p.start);
    let out = actions(&mut p.driver);
    assert!(matches!(out.first(), Some(Action::RecordHeartbeat)));
    assert_eq!(close_code(&out), Some((close::PROTOCOL, "protocol error")));

    // Over the announced maximum, as decoded and as the transport reports it; a text frame.
    let mut p = pair(None);
    p.driver.handle_frame(&vec![1; MAX_FRAME + 1], p.start);
    assert_eq!(close_code(&actions(&mut p.driver)), Some((close::TOO_BIG, "protocol error")));
    for (event, code) in [(SocketEvent::TooBig, close::TOO_BIG), (SocketEvent::Text, close::PROTOCOL)] {
        let mut p = pair(None);
        p.driver.handle_socket(event);
        assert_eq!(close_code(&actions(&mut p.driver)).map(|c| c.0), Some(code));
    }
}

#[test]
fn the_task_table_is_bounded_and_frees_slots_of_callers_that_gave_up() {
    let mut p = pair(None);
    let mut waiting: Vec<_> = (0..MAX_PENDING_TASKS).map(|_| task(&mut p.driver, p.start)).collect();
    assert_eq!(actions(&mut p.driver).len(), MAX_PENDING_TASKS, "each task sent");
    let (_, mut refused) = task(&mut p.driver, p.start);
    assert!(actions(&mut p.driver).is_empty(), "the 65th is not sent");
    assert!(matches!(refused.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
    assert_eq!(p.driver.pending_tasks(), MAX_PENDING_TASKS);
    // A caller that gave up frees its slot.
    drop(waiting.pop());
    let (_, _rx) = task(&mut p.driver, p.start);
    assert!(matches!(actions(&mut p.driver)[..], [Action::Send(_)]));
    assert_eq!(p.driver.pending_tasks(), MAX_PENDING_TASKS);
}

#[test]
fn an_idle_session_keeps_no_queue_storage_between_frames() {
    let mut p = pair(None);
    let frame = heartbeat(&mut p.delegate);
    p.driver.handle_frame(&frame, p.start + Duration::from_secs(1));
    assert!(matches!(actions(&mut p.driver)[..], [Action::RecordHeartbeat]));
    let (task_id, _rx) = task(&mut p.driver, p.start + Duration::from_secs(2));
    actions(&mut p.driver);
    let reply = p.delegate.encode(C2s::TaskResult { seq: 0, task_id, ok: true, payload: "pong".into() });
    p.driver.handle_frame(&reply, p.start + Duration::from_secs(3));
    assert!(matches!(actions(&mut p.driver)[..], [Action::TaskReply { .. }]));
    assert_eq!((p.driver.actions.capacity(), p.driver.tasks.capacity()), (0, 0), "storage kept while idle");
}
