//! The configuration files shipped with the project must stay valid as the format evolves.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn with_key(dir: &Path) {
    let key = dir.join("cluster.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn deploy_example_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_key(dir.path());
    for secret in [
        "ipmi-a.pass",
        "ipmi-b.pass",
        "pdu-1.auth",
        "pdu-1.priv",
        "san.community",
    ] {
        let path = dir.path().join(secret);
        std::fs::write(&path, "s3cret-passphrase\n").expect("write secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let text = std::fs::read_to_string(repo("deploy/watchkeeper.toml")).expect("read example");
    let path = dir.path().join("watchkeeper.toml");
    let c = agent::config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.nodes.len(), 2);
    assert_eq!(c.links.len(), 3);
    assert_eq!(c.node_by_name("bacula-b").map(|n| n.links.len()), Some(3));
    assert_eq!(c.fencing.devices.len(), 5);
    assert_eq!(
        c.fencing.levels.get("bacula-a").map(Vec::len),
        Some(3),
        "BMC, both PDUs, SAN"
    );
    let order: Vec<&str> = c.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        order,
        ["storage", "catalog", "address", "bacula-sd", "bacula-dir"],
        "Bacula's start order"
    );
    assert!(
        c.replicate.is_some(),
        "the Director configuration is replicated"
    );
    assert_eq!(
        c.alerts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["admins"],
        "failovers are mailed"
    );
}

#[test]
fn two_local_agents_template_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_key(dir.path());
    let text = std::fs::read_to_string(repo("examples/two-local-agents.toml.in"))
        .expect("read template")
        .replace("@DIR@", &dir.path().display().to_string())
        .replace("@PORT_A@", "40001")
        .replace("@PORT_B@", "40002");
    let path = dir.path().join("watchkeeper.toml");
    let c = agent::config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.node_by_name("beta").map(|n| n.control_socket.clone()),
        Some(dir.path().join("beta.sock"))
    );
}
