//! Fixed inputs shared by every driver: one token, one account, fixed nonces and a fixed
//! clock, plus a completed in-memory handshake. Deterministic on purpose, so a crash found by
//! the fuzzer replays exactly.
use tether_protocol::handshake::client::{AwaitingWelcome, ClientHandshake};
use tether_protocol::handshake::server::ServerHandshake;
use tether_protocol::message::DelegateInfo;
use tether_protocol::session::{ClientSession, ServerSession};
use tether_protocol::{SessionKeys, Token};
use uuid::Uuid;

/// The clock every driver uses, unix seconds.
pub const NOW: u64 = 1_795_000_000;
/// The account the fixture token belongs to.
pub const ACCOUNT: &str = "acct-fuzz";
/// The challenge's server nonce.
pub const SERVER_NONCE: [u8; 32] = [0xa5; 32];
/// The hello's client nonce.
pub const CLIENT_NONCE: [u8; 32] = [0x5a; 32];
/// The maximum frame size the fixture server announces.
pub const MAX_FRAME: usize = 65_536;
/// The session id the fixture server hands out.
pub const SESSION_ID: Uuid = Uuid::from_u128(0x5e55_1011);
/// The rotation id used for sealed tokens.
pub const ROTATION_ID: Uuid = Uuid::from_u128(0x0707_0707_0707_4707_8707_0707_0707_0707);

/// The fixture token (`seed` picks one of several, all deterministic).
pub fn token(seed: u8) -> Token {
    Token::from_parts(
        Uuid::from_u128(0x1111_2222_3333_4444_9555_6666_7777_8800 + u128::from(seed)),
        [seed; 32],
    )
}

/// The delegate the fixture client announces.
pub fn delegate() -> DelegateInfo {
    DelegateInfo {
        name: "fuzz".into(),
        instance: Uuid::from_u128(42),
        version: "0.1.0".into(),
        host: "h".into(),
    }
}

/// The session keys of the fixture handshake (token 1, fixed nonces).
pub fn session_keys() -> SessionKeys {
    token(1).key().session_keys(&SERVER_NONCE, &CLIENT_NONCE)
}

/// A fresh server handshake and its challenge frame.
pub fn server() -> (ServerHandshake, Vec<u8>) {
    ServerHandshake::new(SERVER_NONCE, NOW, MAX_FRAME)
}

/// A fresh client handshake for token 1.
pub fn client() -> ClientHandshake {
    ClientHandshake::new(ACCOUNT, &token(1), delegate())
}

/// The client after the fixture challenge, and its hello frame.
pub fn client_after_challenge() -> (AwaitingWelcome, Vec<u8>) {
    let (_, challenge) = server();
    client().receive_challenge(&challenge, CLIENT_NONCE, NOW).expect("fixture challenge is valid")
}

/// A completed handshake: both ends of one session.
pub fn sessions() -> (ClientSession, ServerSession) {
    let t = token(1);
    let (server, _) = server();
    let (awaiting, hello) = client_after_challenge();
    let received = server.receive_hello(&hello, NOW + 1).expect("fixture hello is valid");
    let verified = received.verify(Some(&t.key())).expect("fixture hello verifies");
    let (server_session, welcome) = verified.accept(SESSION_ID, 30, Some(NOW + 3600));
    let (client_session, _) = awaiting.receive_welcome(&welcome).expect("fixture welcome verifies");
    (client_session, server_session)
}
