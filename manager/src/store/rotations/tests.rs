//! Tests of the rotation tables: stored words, acks and reconnections, the sealed successor
//! and the once-per-session claim, listing.
use super::*;

fn store() -> (tempfile::TempDir, crate::store::SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
    let account = crate::store::accounts::Account {
        id: "acme".into(),
        name: "acme".into(),
        created_at: 0,
        created_by: "t".into(),
    };
    store.call_blocking(|c| crate::store::accounts::insert(c, &account)).unwrap();
    (dir, store)
}

fn rotation(id: u128, started_at: u64) -> RotationRow {
    RotationRow {
        id: Uuid::from_u128(id),
        account_id: "acme".into(),
        old_token_id: Uuid::from_u128(100 + id),
        new_token_id: Uuid::from_u128(200 + id),
        started_at,
        started_by: "t".into(),
        deadline: started_at + 60,
        finished_at: None,
        outcome: None,
    }
}

#[test]
fn the_stored_words_are_the_ones_databases_already_hold() {
    // Databases written before these enums hold exactly these words.
    let words = |all: &[&str]| all.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    assert_eq!(
        DelegateState::ALL.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        words(&["pending", "acked", "reconnected"])
    );
    assert_eq!(
        AckOutcome::ALL.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        words(&["applied", "failed", "manual"])
    );
    assert_eq!(
        RotationOutcome::ALL.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        words(&["completed", "grace_expired"])
    );
    for s in RotationState::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.to_string()));
        assert_eq!(RotationState::parse(s.as_str()), Some(*s));
    }
    for s in DelegateState::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.to_string()));
        let shown = ShownDelegateState::from(*s);
        assert_eq!(shown.as_str(), s.as_str(), "the shown words include the stored ones");
        assert_eq!(serde_json::from_value::<ShownDelegateState>(s.to_string().into()).unwrap(), shown);
    }
    for s in ShownDelegateState::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.to_string()));
    }
    for s in AckOutcome::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.to_string()));
    }
}

#[test]
fn rows_written_as_words_read_back_as_states_and_unknown_words_are_errors() {
    let (_dir, store) = store();
    store
        .call_blocking(|c| {
            // As an older manager wrote them: plain words in the text columns.
            insert(c, &rotation(1, 10))?;
            c.execute(
                "INSERT INTO rotation_delegates(rotation_id, instance, name, session_id, state, outcome, detail, updated_at)
                 VALUES (?1, ?2, 'd1', ?3, 'acked', 'manual', 'by hand', 11)",
                params![Uuid::from_u128(1).to_string(), Uuid::from_u128(7).to_string(), Uuid::from_u128(8).to_string()],
            )?;
            c.execute(
                "UPDATE rotations SET finished_at = 12, outcome = 'grace_expired' WHERE id = ?1",
                [Uuid::from_u128(1).to_string()],
            )?;
            let row = get(c, Uuid::from_u128(1))?.unwrap();
            assert_eq!(row.outcome, Some(RotationOutcome::GraceExpired));
            assert_eq!(row.state(), RotationState::GraceExpired);
            let ds = delegates(c, Uuid::from_u128(1))?;
            assert_eq!((ds[0].state, ds[0].outcome), (DelegateState::Acked, Some(AckOutcome::Manual)));
            // A word this binary does not know is an error, not a panic or a default.
            c.execute("UPDATE rotation_delegates SET state = 'gone'", [])?;
            assert!(delegates(c, Uuid::from_u128(1)).is_err());
            Ok(())
        })
        .unwrap();
}

#[test]
fn progress_counts_running_rotations_past_half_grace_and_their_delegates_as_shown() {
    let (_dir, store) = store();
    let p = store
        .call_blocking(|c| {
            insert(c, &rotation(1, 10))?; // grace 10..70: past half after 40
            insert(c, &rotation(2, 50))?; // 50..110: past half after 80
            insert(c, &rotation(3, 0))?;
            let delegate = |n: u128| RotationDelegate {
                instance: Uuid::from_u128(n),
                name: format!("d{n}"),
                session_id: Uuid::from_u128(1000 + n),
                state: DelegateState::Pending,
                outcome: None,
                detail: None,
                updated_at: 10,
            };
            for n in [1, 2, 3] {
                add_delegate(c, Uuid::from_u128(1), &delegate(n))?;
            }
            ack(c, Uuid::from_u128(1), Uuid::from_u128(2), AckOutcome::Manual, "", 11)?;
            ack(c, Uuid::from_u128(1), Uuid::from_u128(3), AckOutcome::Applied, "", 11)?;
            add_delegate(c, Uuid::from_u128(3), &delegate(4))?;
            finish(c, Uuid::from_u128(3), 20, RotationOutcome::Completed)?;
            progress(c, 45)
        })
        .unwrap();
    assert_eq!((p.running, p.past_half_grace), (2, 1));
    let mut delegates = p.delegates.clone();
    delegates.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        delegates,
        vec![
            (ShownDelegateState::Acked, 1),
            (ShownDelegateState::Manual, 1),
            (ShownDelegateState::Pending, 1)
        ]
    );
}

#[test]
fn acks_and_reconnections_move_a_delegate_and_a_reconnection_stays() {
    let (_dir, store) = store();
    store
        .call_blocking(|c| {
            insert(c, &rotation(1, 10))?;
            let d = RotationDelegate {
                instance: Uuid::from_u128(7),
                name: "d1".into(),
                session_id: Uuid::from_u128(8),
                state: DelegateState::Pending,
                outcome: None,
                detail: None,
                updated_at: 10,
            };
            add_delegate(c, Uuid::from_u128(1), &d)?;
            assert!(ack(c, Uuid::from_u128(1), d.instance, AckOutcome::Applied, "ok", 11)?);
            assert_eq!(delegates(c, Uuid::from_u128(1))?[0].state, DelegateState::Acked);
            assert_eq!(reconnected(c, Uuid::from_u128(1), d.instance, "d1", 12)?, 1);
            assert!(ack(c, Uuid::from_u128(1), d.instance, AckOutcome::Failed, "late", 13)?);
            let got = &delegates(c, Uuid::from_u128(1))?[0];
            assert_eq!((got.state, got.outcome), (DelegateState::Reconnected, Some(AckOutcome::Failed)));
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_sealed_successor_is_kept_while_running_and_wiped_when_finished() {
    let (_dir, store) = store();
    store
        .call_blocking(|c| {
            insert(c, &rotation(1, 10))?;
            assert_eq!(sealed_successor(c, Uuid::from_u128(1))?, None);
            set_sealed_successor(c, Uuid::from_u128(1), b"sealed")?;
            assert_eq!(sealed_successor(c, Uuid::from_u128(1))?.as_deref(), Some(&b"sealed"[..]));
            assert!(finish(c, Uuid::from_u128(1), 30, RotationOutcome::Completed)?);
            assert_eq!(sealed_successor(c, Uuid::from_u128(1))?, None);
            let left: Option<Vec<u8>> = c.query_row(
                "SELECT sealed_successor FROM rotations WHERE id = ?1",
                [Uuid::from_u128(1).to_string()],
                |r| r.get(0),
            )?;
            assert_eq!(left, None, "wiped from the row, not only hidden");
            set_sealed_successor(c, Uuid::from_u128(1), b"again")?;
            assert_eq!(sealed_successor(c, Uuid::from_u128(1))?, None, "a finished rotation keeps none");
            Ok(())
        })
        .unwrap();
}

#[test]
fn each_session_is_sent_a_rotation_once() {
    let (_dir, store) = store();
    let d = |instance: u128, session: u128| RotationDelegate {
        instance: Uuid::from_u128(instance),
        name: format!("d{instance}"),
        session_id: Uuid::from_u128(session),
        state: DelegateState::Pending,
        outcome: None,
        detail: None,
        updated_at: 10,
    };
    store
        .call_blocking(move |c| {
            insert(c, &rotation(1, 10))?;
            let r = Uuid::from_u128(1);
            assert!(track_and_claim_push(c, r, &d(7, 70))?, "first session of an instance");
            assert!(!track_and_claim_push(c, r, &d(7, 70))?, "the same session again");
            assert!(track_and_claim_push(c, r, &d(8, 80))?, "another instance");
            // The instance reconnected on a new session (after a manager restart): sent again;
            // the delegate acks a rotation it already applied without applying it twice.
            assert!(track_and_claim_push(c, r, &d(7, 71))?);
            assert!(!track_and_claim_push(c, r, &d(7, 71))?);
            assert_eq!(delegates(c, r)?.len(), 2);
            Ok(())
        })
        .unwrap();
}

#[test]
fn recent_lists_every_rotation_and_unfinished_only_the_running_ones() {
    let (_dir, store) = store();
    store
        .call_blocking(|c| {
            insert(c, &rotation(1, 10))?;
            insert(c, &rotation(2, 20))?;
            assert!(finish(c, Uuid::from_u128(1), 30, RotationOutcome::Completed)?);
            assert!(!finish(c, Uuid::from_u128(1), 31, RotationOutcome::GraceExpired)?, "finished once");
            let ids = |rows: Vec<RotationRow>| rows.into_iter().map(|r| r.id.as_u128()).collect::<Vec<_>>();
            assert_eq!(ids(list_recent(c, 10)?), vec![2, 1]);
            assert_eq!(ids(list_unfinished(c, 10)?), vec![2]);
            assert_eq!(get(c, Uuid::from_u128(1))?.unwrap().state(), RotationState::Completed);
            Ok(())
        })
        .unwrap();
}
