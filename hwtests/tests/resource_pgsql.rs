//! The Catalog executor (`drivers::resource::pgsql`) against real PostgreSQL: a primary and a
//! streaming hot standby from `hwtests::pg`.
//!
//! The scenario the executor exists for: the holder crashes (`SIGKILL` to its postmaster and
//! children), the peer's executor promotes the standby and returns only once it takes writes,
//! and the old primary, when back, rejoins as a standby of the new one (rewind or reclone)
//! without ever serving as a primary. Timings are printed with `eprintln!` (`--nocapture`).

use std::time::Duration;

use drivers::resource::pgsql::{PgsqlResource, RejoinOutcome, RejoinPolicy};
use drivers::resource::{Resource, ResourceErrorKind, ResourceState};
use hwtests::pg::{Node, PgCluster};
use tokio::time::Instant;

/// Time allowed for a promotion, a rejoin or a restart on a loaded test machine.
const ACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a row written on the primary may take to show on a standby.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

fn deadline() -> Instant {
    Instant::now() + ACTION_TIMEOUT
}

fn count(pg: &PgCluster, node: Node) -> String {
    pg.sql_ok(node, "SELECT count(*) FROM jobs")
}

/// Rows on A, replicated to B, then A crashes and B's executor promotes B. Returns B's
/// executor, with 100 rows from before and 50 from after the takeover on B.
async fn crash_a_and_promote_b(pg: &PgCluster, policy: RejoinPolicy) -> PgsqlResource {
    pg.sql_ok(
        Node::A,
        "CREATE TABLE jobs (id int PRIMARY KEY, name text); \
         INSERT INTO jobs SELECT g, 'before-' || g FROM generate_series(1, 100) g",
    );
    pg.wait_for(
        Node::B,
        "SELECT count(*) FROM jobs",
        "100",
        REPLICATION_TIMEOUT,
    );
    let killed = pg.crash(Node::A);
    eprintln!("crashed A (postmaster {killed})");

    let mut b = PgsqlResource::new("catalog-b", pg.params(Node::B, policy)).expect("executor");
    assert_eq!(
        b.monitor(deadline()).await,
        Ok(ResourceState::Stopped),
        "a running standby does not hold the catalog role"
    );
    let began = Instant::now();
    b.start(deadline())
        .await
        .expect("start promotes the standby");
    let call = began.elapsed();
    let promote = b.last_promotion().expect("start promoted");
    eprintln!(
        "TIMING promote_to_writable_ms={} start_call_ms={}",
        promote.as_millis(),
        call.as_millis()
    );
    // Writable the moment start returned: no retry here.
    assert_eq!(pg.in_recovery(Node::B), Some(false));
    assert_eq!(count(pg, Node::B), "100");
    pg.sql_ok(
        Node::B,
        "INSERT INTO jobs SELECT g, 'after-' || g FROM generate_series(101, 150) g",
    );
    assert_eq!(b.monitor(deadline()).await, Ok(ResourceState::Running));
    b.start(deadline())
        .await
        .expect("start again is idempotent");
    assert_eq!(
        b.metrics()
            .promotions
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "a second start does not promote again"
    );
    assert!(pg.postmaster_pid(Node::A).is_none());
    b
}

#[tokio::test]
async fn takeover_promotes_standby_and_old_primary_rewinds() {
    let pg = PgCluster::start();
    let mut b = crash_a_and_promote_b(&pg, RejoinPolicy::Rewind).await;

    let mut a =
        PgsqlResource::new("catalog-a", pg.params(Node::A, RejoinPolicy::Rewind)).expect("a");
    let report = a
        .rejoin_as_standby(deadline())
        .await
        .expect("rejoin by rewind");
    eprintln!("rewind report: {report:?}");
    assert_eq!(report.outcome, RejoinOutcome::Rewound);
    assert_eq!(report.fallback_reason, None);
    assert!(
        report.crash_recovery.is_some(),
        "a crashed primary needs crash recovery before pg_rewind"
    );
    let rewind = report.rewind.expect("rewind timed");
    eprintln!(
        "TIMING rewind_ms={} crash_recovery_ms={} start_to_streaming_ms={} rejoin_total_ms={}",
        rewind.as_millis(),
        report.crash_recovery.unwrap_or_default().as_millis(),
        report.start_to_streaming.unwrap_or_default().as_millis(),
        report.total.as_millis()
    );
    assert!(!a.rejoin_required());
    assert!(pg.datadir(Node::A).join("standby.signal").is_file());
    assert_eq!(pg.in_recovery(Node::A), Some(true));
    pg.wait_streaming(Node::A);
    pg.wait_for(
        Node::A,
        "SELECT count(*) FROM jobs",
        "150",
        REPLICATION_TIMEOUT,
    );
    pg.sql_ok(Node::B, "INSERT INTO jobs VALUES (151, 'after-rejoin')");
    pg.wait_for(
        Node::A,
        "SELECT name FROM jobs WHERE id = 151",
        "after-rejoin",
        REPLICATION_TIMEOUT,
    );
    assert_eq!(a.monitor(deadline()).await, Ok(ResourceState::Stopped));
    assert_eq!(b.monitor(deadline()).await, Ok(ResourceState::Running));
    let again = a.rejoin_as_standby(deadline()).await.expect("rejoin again");
    assert_eq!(again.outcome, RejoinOutcome::AlreadyStandby);
}

#[tokio::test]
async fn takeover_then_old_primary_reclones_and_takes_back() {
    let pg = PgCluster::start();
    let mut b = crash_a_and_promote_b(&pg, RejoinPolicy::Reclone).await;

    let mut a =
        PgsqlResource::new("catalog-a", pg.params(Node::A, RejoinPolicy::Reclone)).expect("a");
    let report = a
        .rejoin_as_standby(deadline())
        .await
        .expect("rejoin by reclone");
    eprintln!("reclone report: {report:?}");
    let RejoinOutcome::Recloned { old_datadir } = &report.outcome else {
        panic!("expected a reclone, got {:?}", report.outcome);
    };
    assert!(
        old_datadir.join("PG_VERSION").is_file(),
        "the old data directory is kept"
    );
    assert_eq!(pg.moved_aside(Node::A), vec![old_datadir.clone()]);
    eprintln!(
        "TIMING basebackup_ms={} start_to_streaming_ms={} rejoin_total_ms={}",
        report.clone.unwrap_or_default().as_millis(),
        report.start_to_streaming.unwrap_or_default().as_millis(),
        report.total.as_millis()
    );
    assert_eq!(pg.in_recovery(Node::A), Some(true));
    pg.wait_streaming(Node::A);
    pg.wait_for(
        Node::A,
        "SELECT count(*) FROM jobs",
        "150",
        REPLICATION_TIMEOUT,
    );

    // And back: B crashes, the recloned A is promoted with everything B had.
    pg.sql_ok(
        Node::B,
        "INSERT INTO jobs VALUES (151, 'before-second-crash')",
    );
    pg.wait_for(
        Node::A,
        "SELECT count(*) FROM jobs",
        "151",
        REPLICATION_TIMEOUT,
    );
    pg.crash(Node::B);
    a.start(deadline()).await.expect("promote A back");
    eprintln!(
        "TIMING second_promote_to_writable_ms={}",
        a.last_promotion().unwrap_or_default().as_millis()
    );
    pg.sql_ok(
        Node::A,
        "INSERT INTO jobs VALUES (152, 'after-second-takeover')",
    );
    assert_eq!(count(&pg, Node::A), "152");
    assert_eq!(a.monitor(deadline()).await, Ok(ResourceState::Running));
    let report = b.rejoin_as_standby(deadline()).await.expect("B rejoins");
    assert!(matches!(report.outcome, RejoinOutcome::Recloned { .. }));
    pg.wait_for(
        Node::B,
        "SELECT count(*) FROM jobs",
        "152",
        REPLICATION_TIMEOUT,
    );
}

#[tokio::test]
async fn manual_rejoin_reports_and_never_starts_a_second_primary() {
    let pg = PgCluster::start();
    let _b = crash_a_and_promote_b(&pg, RejoinPolicy::Manual).await;

    let mut a =
        PgsqlResource::new("catalog-a", pg.params(Node::A, RejoinPolicy::Manual)).expect("a");
    let report = a
        .rejoin_as_standby(deadline())
        .await
        .expect("manual rejoin");
    let RejoinOutcome::ManualRequired { command } = &report.outcome else {
        panic!("expected a manual rejoin, got {:?}", report.outcome);
    };
    eprintln!("manual command: {command}");
    assert!(command.contains("pg_rewind") && command.contains("pg_basebackup"));
    assert!(
        !command.contains(hwtests::pg::REPLICATION_PASSWORD),
        "no password in the report"
    );
    assert!(a.rejoin_required());
    let e = a.start(deadline()).await.expect_err("must refuse");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(e.message.contains("second primary"), "{e}");
    assert!(
        pg.postmaster_pid(Node::A).is_none(),
        "the old primary was not started"
    );
    // The crashed server's postmaster.pid is still there: crashed, not cleanly stopped.
    let e = a.monitor(deadline()).await.expect_err("crashed");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(e.message.contains("crashed"), "{e}");
}

#[tokio::test]
async fn clean_stop_and_start_of_the_primary() {
    let pg = PgCluster::start();
    let mut a =
        PgsqlResource::new("catalog-a", pg.params(Node::A, RejoinPolicy::Rewind)).expect("a");
    let mut b =
        PgsqlResource::new("catalog-b", pg.params(Node::B, RejoinPolicy::Rewind)).expect("b");
    assert_eq!(a.monitor(deadline()).await, Ok(ResourceState::Running));
    assert_eq!(b.monitor(deadline()).await, Ok(ResourceState::Stopped));
    a.start(deadline())
        .await
        .expect("start of a running primary");
    assert_eq!(a.last_promotion(), None);
    pg.sql_ok(
        Node::A,
        "CREATE TABLE jobs (id int); INSERT INTO jobs VALUES (1)",
    );

    let pid = pg.postmaster_pid(Node::A).expect("A runs");
    let began = Instant::now();
    a.stop(deadline()).await.expect("stop");
    eprintln!("TIMING stop_ms={}", began.elapsed().as_millis());
    assert!(!hwtests::pg::alive(pid));
    assert!(pg.postmaster_pid(Node::A).is_none());
    assert!(!pg.datadir(Node::A).join("postmaster.pid").exists());
    assert_eq!(a.monitor(deadline()).await, Ok(ResourceState::Stopped));
    a.stop(deadline()).await.expect("stop again is idempotent");
    assert_eq!(
        a.metrics()
            .immediate_stops
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let began = Instant::now();
    a.start(deadline()).await.expect("start");
    eprintln!(
        "TIMING start_stopped_primary_ms={}",
        began.elapsed().as_millis()
    );
    assert_eq!(a.monitor(deadline()).await, Ok(ResourceState::Running));
    assert_eq!(count(&pg, Node::A), "1");
    pg.sql_ok(Node::A, "INSERT INTO jobs VALUES (2)");
    pg.wait_streaming(Node::B);
    pg.wait_for(
        Node::B,
        "SELECT count(*) FROM jobs",
        "2",
        REPLICATION_TIMEOUT,
    );

    // A standby is stopped the same way (starting it here would promote it).
    b.stop(deadline()).await.expect("stop the standby");
    assert!(pg.postmaster_pid(Node::B).is_none());
    assert_eq!(b.monitor(deadline()).await, Ok(ResourceState::Stopped));
}

#[tokio::test]
async fn wrong_password_is_permission() {
    let pg = PgCluster::start();
    let bad = pg.root().join("bad-pgpass");
    std::fs::write(&bad, "*:*:*:*:not-the-password\n").expect("pgpass");
    make_postgres_only(&bad);
    let mut params = pg.params(Node::A, RejoinPolicy::Rewind);
    params.password_file = Some(bad.clone());
    let mut a = PgsqlResource::new("catalog-a", params).expect("a");
    let e = a.monitor(deadline()).await.expect_err("bad password");
    assert_eq!(e.kind, ResourceErrorKind::Permission, "{e}");
    let e = a.start(deadline()).await.expect_err("bad password");
    assert_eq!(e.kind, ResourceErrorKind::Permission, "{e}");
    assert!(!e.message.contains("not-the-password"), "{e}");
    // The server was running and is left alone.
    assert!(pg.postmaster_pid(Node::A).is_some());

    // The same for the replication role on a rejoin by reclone: B's data directory is left
    // as it was.
    pg.stop_node(Node::B);
    let mut params = pg.params(Node::B, RejoinPolicy::Reclone);
    let good = pg.password_file().display().to_string();
    params.primary_conninfo = params
        .primary_conninfo
        .map(|c| c.replace(&good, &bad.display().to_string()));
    params.password_file = Some(bad);
    let mut b = PgsqlResource::new("catalog-b", params).expect("b");
    let e = b
        .rejoin_as_standby(deadline())
        .await
        .expect_err("bad password");
    assert_eq!(e.kind, ResourceErrorKind::Permission, "{e}");
    eprintln!("reclone with a bad password: {e}");
    assert!(pg.moved_aside(Node::B).is_empty());
    assert!(pg.datadir(Node::B).join("PG_VERSION").is_file());
    assert!(pg.postmaster_pid(Node::B).is_none());
}

#[tokio::test]
async fn start_with_too_short_a_deadline_times_out_and_leaves_nothing() {
    let pg = PgCluster::start();
    pg.stop_node(Node::A);
    let mut a =
        PgsqlResource::new("catalog-a", pg.params(Node::A, RejoinPolicy::Rewind)).expect("a");
    let mut timeouts = 0;
    for ms in [10u64, 60, 120, 200, 300] {
        let began = Instant::now();
        let result = a.start(Instant::now() + Duration::from_millis(ms)).await;
        let took = began.elapsed();
        match result {
            Err(e) => {
                assert_eq!(e.kind, ResourceErrorKind::Timeout, "{ms} ms: {e}");
                timeouts += 1;
                eprintln!("{ms} ms deadline: timed out, returned after {took:?}: {e}");
                assert!(
                    pg.postmaster_pid(Node::A).is_none(),
                    "{ms} ms: a timed-out start left a postmaster running"
                );
                assert_eq!(
                    a.monitor(deadline()).await,
                    Ok(ResourceState::Stopped),
                    "{ms} ms"
                );
            }
            Ok(()) => {
                eprintln!("{ms} ms deadline: started in {took:?}");
                a.stop(deadline()).await.expect("stop");
            }
        }
    }
    assert!(timeouts >= 1, "the 10 ms start must time out");
    a.start(deadline()).await.expect("start with time enough");
    assert_eq!(a.monitor(deadline()).await, Ok(ResourceState::Running));
}

/// Gives `path` to the postgres user, mode 0600 (libpq ignores group- or world-readable
/// password files, and the executor runs `psql` as postgres).
fn make_postgres_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let user = nix::unistd::User::from_name(hwtests::pg::PG_OS_USER)
        .ok()
        .flatten()
        .expect("postgres user");
    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A standby whose host lost power (SIGKILL to its postmaster) while the primary kept taking
/// writes comes back by a plain restart: no rewind, no fresh copy, its data directory kept,
/// and it catches up on the rows it missed.
#[tokio::test]
async fn a_crashed_standby_restarts_without_a_fresh_copy() {
    let pg = PgCluster::start();
    pg.sql_ok(
        Node::A,
        "CREATE TABLE jobs (id int PRIMARY KEY, name text); \
         INSERT INTO jobs SELECT g, 'before-' || g FROM generate_series(1, 100) g",
    );
    pg.wait_for(
        Node::B,
        "SELECT count(*) FROM jobs",
        "100",
        REPLICATION_TIMEOUT,
    );
    let killed = pg.crash(Node::B);
    eprintln!("crashed standby B (postmaster {killed})");
    pg.sql_ok(
        Node::A,
        "INSERT INTO jobs SELECT g, 'missed-' || g FROM generate_series(101, 130) g",
    );
    let mut b =
        PgsqlResource::new("catalog-b", pg.params(Node::B, RejoinPolicy::Rewind)).expect("b");
    let report = b
        .rejoin_as_standby(deadline())
        .await
        .expect("rejoin by restart");
    eprintln!("restart report: {report:?}");
    assert_eq!(report.outcome, RejoinOutcome::Restarted);
    assert_eq!(report.rewind, None, "nothing to rewind on a standby");
    assert_eq!(report.clone, None, "no fresh copy");
    assert!(pg.moved_aside(Node::B).is_empty(), "data directory kept");
    eprintln!(
        "TIMING standby_restart_to_streaming_ms={} rejoin_total_ms={}",
        report.start_to_streaming.unwrap_or_default().as_millis(),
        report.total.as_millis()
    );
    assert_eq!(pg.in_recovery(Node::B), Some(true));
    pg.wait_for(
        Node::B,
        "SELECT count(*) FROM jobs",
        "130",
        REPLICATION_TIMEOUT,
    );
    assert_eq!(b.monitor(deadline()).await, Ok(ResourceState::Stopped));
}

/// A rejoin never holds the executor waiting for a primary that has gone: it gives up within
/// seconds when the primary stops answering, and at once when the runtime raises the follow
/// interrupt (this node is about to take the group), leaving the standby running for the
/// promotion.
#[tokio::test]
async fn a_rejoin_gives_way_when_the_primary_is_gone_or_a_start_is_asked() {
    let pg = PgCluster::start();
    pg.crash(Node::B);
    pg.stop_node(Node::A);
    let mut b =
        PgsqlResource::new("catalog-b", pg.params(Node::B, RejoinPolicy::Rewind)).expect("b");
    let began = Instant::now();
    let e = b
        .rejoin_as_standby(deadline())
        .await
        .expect_err("no primary to follow");
    eprintln!(
        "TIMING rejoin_without_primary_ms={}: {e}",
        began.elapsed().as_millis()
    );
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "a rejoin with the primary gone took {:?}",
        began.elapsed()
    );

    // The same standby, asked to give way: it stays up, in recovery, for a start to promote.
    let flag = b
        .follow_interrupt()
        .expect("the Catalog has a standby role");
    flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let began = Instant::now();
    let e = b
        .rejoin_as_standby(deadline())
        .await
        .expect_err("interrupted");
    assert!(e.to_string().contains("taking the group"), "{e}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        pg.in_recovery(Node::B),
        Some(true),
        "left running as a standby"
    );
    b.start(deadline()).await.expect("start promotes it");
    assert_eq!(pg.in_recovery(Node::B), Some(false));
}

/// A takeover given up right after the promotion (a later resource of the group would not
/// start): the promoted primary is stopped while the old primary is rejoining it. The stop
/// waits until the old primary streams the new timeline, so that it rewound onto it and can
/// take the Catalog back; stopped at once, it would leave the old primary with a diverged
/// copy and no primary to rewind from, and neither node could start the Catalog.
#[tokio::test]
async fn a_promoted_primary_given_up_at_once_stops_only_after_the_old_one_follows_it() {
    let pg = PgCluster::start();
    let mut b = crash_a_and_promote_b(&pg, RejoinPolicy::Rewind).await;
    let mut a =
        PgsqlResource::new("catalog-a", pg.params(Node::A, RejoinPolicy::Rewind)).expect("a");
    let began = std::time::Instant::now();
    let (rejoined, stopped) = tokio::join!(a.rejoin_as_standby(deadline()), async {
        // The group stops on B as soon as the old primary starts rejoining.
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.stop(deadline()).await
    });
    let report = rejoined.expect("A rewinds onto B's timeline while B waits");
    assert_eq!(report.outcome, RejoinOutcome::Rewound, "{report:?}");
    stopped.expect("B stops");
    eprintln!(
        "A rewound in {:?}; B stopped {} ms after the rejoin began",
        report.rewind,
        began.elapsed().as_millis()
    );
    assert_eq!(pg.postmaster_pid(Node::B), None, "B is stopped");
    // A is a standby of B's timeline: it takes the Catalog back, with every row.
    a.start(deadline()).await.expect("A takes the Catalog back");
    assert_eq!(pg.in_recovery(Node::A), Some(false));
    assert_eq!(count(&pg, Node::A), "150");
}
