//! Man pages and shell completions, generated from the programs' own definitions for the Debian
//! package (`scripts/package.sh`): `watchkeeper generate-man DIR` and
//! `watchkeeper generate-completions DIR`, both hidden from `--help`, the pages and the
//! completions.
//!
//! Why generated: a hand-written page drifts from the options the moment one is added; these
//! come from the same clap definition ([`crate::cli::Cli`]) that parses the command line, so the
//! page, the completions and `--help` cannot disagree. `fence_watchkeeper` has no clap
//! definition (it speaks the fence-agents protocol, whose short letters change meaning with
//! `--type`), so its page is made from the metadata XML it prints for Pacemaker
//! (`-o metadata`), as the fence-agents build makes theirs.
//!
//! Why subcommands of the binary rather than a `build.rs`: a build script would run clap_mangen
//! and clap_complete on every build of the agent, for every developer and every test run, to
//! produce files only packaging needs; and its output would land in an opaque `OUT_DIR`. The
//! packaging script runs the release binary it is about to ship once, so the pages describe
//! exactly that binary. The cost is two small dependencies in the binary (the rendering code
//! is only reached from these subcommands).
//!
//! Output is flat, in the generators' own file names (`watchkeeper.1`, `watchkeeper-run.1`, …,
//! `fence_watchkeeper.8`; `watchkeeper.bash`, `_watchkeeper`, `watchkeeper.fish`): where each
//! file goes is the package layout's business, not the binary's.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::cli::Cli;

/// The manual the pages belong to (the centre of each page's footer).
const MANUAL: &str = "watchkeeper manual";

/// The shells completions are generated for: those Debian ships completion directories for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Why a page or a completion script could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A file or the output directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// What was written.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The fence agent's metadata XML is not in the shape its page is made from.
    #[error("fence_watchkeeper metadata: {0}")]
    Metadata(&'static str),
}

/// `watchkeeper generate-man DIR`: writes the pages, prints their paths; returns the exit code.
pub fn generate_man(dir: &Path) -> u8 {
    report(man_pages(dir))
}

/// `watchkeeper generate-completions DIR`: writes the scripts, prints their paths; returns the
/// exit code.
pub fn generate_completions(dir: &Path) -> u8 {
    report(completions(dir))
}

fn report(result: Result<Vec<PathBuf>, GenerateError>) -> u8 {
    match result {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Writes `watchkeeper.1`, one `watchkeeper-SUBCOMMAND.1` per visible subcommand (nested ones
/// too, e.g. `watchkeeper-watchdog-list.1`) and `fence_watchkeeper.8` into `dir`, creating it
/// if needed; returns the paths written.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    create_dir(dir)?;
    let mut cmd = Cli::command()
        .disable_help_subcommand(true)
        .long_about(DESCRIPTION);
    // The one-line summary is the crate's description, which names the program already.
    if let Some(about) = cmd.get_about().map(ToString::to_string) {
        if let Some(rest) = about.strip_prefix("watchkeeper: ") {
            cmd = cmd.about(rest.to_owned());
        }
    }
    // Built once, so that every subcommand knows its full name (`watchkeeper-run`) and its
    // usage line (`watchkeeper run [OPTIONS]`).
    cmd.build();
    let mut written = Vec::new();
    command_pages(&cmd, dir, &mut written, Some(&top_page_sections()))?;
    let path = dir.join("fence_watchkeeper.8");
    write(
        &path,
        fence_agent_page(&crate::fence::pacemaker::metadata())?.as_bytes(),
    )?;
    written.push(path);
    Ok(written)
}

/// The page of `cmd` (with `extra` sections at its end), then those of its visible
/// subcommands, depth first.
fn command_pages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
    extra: Option<&Roff>,
) -> Result<(), GenerateError> {
    let man = Man::new(cmd.clone())
        .manual(MANUAL)
        .source(format!("watchkeeper {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page).map_err(|source| GenerateError::Io {
        path: path.clone(),
        source,
    })?;
    if let Some(extra) = extra {
        page.extend_from_slice(extra.render().as_bytes());
    }
    write(&path, &page)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_pages(sub, dir, written, None)?;
    }
    Ok(())
}

/// The DESCRIPTION of `watchkeeper(1)`: what the program is, which `--help` leaves out.
const DESCRIPTION: &str = "watchkeeper keeps a resource group (a Bacula Director, Storage Daemon \
     and Catalog, an address, file systems) running on exactly one of two or three hosts. Each \
     host runs the agent (watchkeeper run, started by the watchkeeper.service unit), which \
     exchanges authenticated heartbeats over every link in the configuration (serial \
     null-modem cables, crossover NICs, the LAN), feeds the hardware watchdog, and, when the \
     holder falls silent, fences it through its fence devices before starting the group in \
     order. The other subcommands ask the running agent, act on fence devices by hand, check a \
     configuration, or replay failure scenarios in the simulator. Each subcommand has its own \
     page, named below.";

/// FILES and SEE ALSO, at the end of `watchkeeper(1)`.
fn top_page_sections() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/watchkeeper/watchkeeper.toml",
            "The cluster configuration, the same on every node (check it with \
             watchkeeper check-config).",
        ),
        (
            "/etc/watchkeeper/cluster.key",
            "The cluster key (mode 0600), the same on every node; made by watchkeeper keygen.",
        ),
        (
            "/var/lib/watchkeeper",
            "The agent's state: its ownership record (epoch, votes), incarnation counter, fence \
             ledger and replicated Director configuration.",
        ),
        (
            "/run/watchkeeper",
            "The control socket of the running agent.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(path)]);
        roff.text([roman(what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("fence_watchkeeper"),
        roman("(8), "),
        bold("systemctl"),
        roman("(1), "),
        bold("udevadm"),
        roman("(8); /usr/share/doc/watchkeeper/README.md"),
    ]);
    roff
}

/// Writes the bash, zsh and fish completions of `watchkeeper` into `dir`, creating it if
/// needed; returns the paths written.
pub fn completions(dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    create_dir(dir)?;
    let mut cmd = without_hidden_subcommands(&Cli::command());
    let mut written = Vec::new();
    for shell in SHELLS {
        let path =
            clap_complete::generate_to(shell, &mut cmd, "watchkeeper", dir).map_err(|source| {
                GenerateError::Io {
                    path: dir.to_owned(),
                    source,
                }
            })?;
        written.push(path);
    }
    Ok(written)
}

/// `cmd` without its hidden subcommands (these generators), which the completion generators
/// would otherwise offer. clap cannot remove a subcommand, so the top level is rebuilt: it has
/// no arguments of its own besides `--help` and `--version`, which clap adds.
fn without_hidden_subcommands(cmd: &clap::Command) -> clap::Command {
    let mut top = clap::Command::new("watchkeeper")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(cmd.is_subcommand_required_set())
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(a) = cmd.get_about() {
        top = top.about(a.clone());
    }
    top
}

fn create_dir(dir: &Path) -> Result<(), GenerateError> {
    fs::create_dir_all(dir).map_err(|source| GenerateError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &[u8]) -> Result<(), GenerateError> {
    fs::File::create(path)
        .and_then(|mut f| f.write_all(contents))
        .map_err(|source| GenerateError::Io {
            path: path.to_owned(),
            source,
        })
}

/// One parameter of the fence agent, as its metadata describes it.
#[derive(Debug, PartialEq, Eq)]
struct Parameter {
    /// The stdin name (`ip`, `snmp_priv_passwd`).
    name: String,
    /// The command-line forms (`-a, --ip=[ip]`).
    getopt: String,
    required: bool,
    default: Option<String>,
    /// The values of a select parameter.
    choices: Vec<String>,
    /// The help text, with the types it applies to.
    description: String,
}

/// What the page is made from: the agent's one-line and long descriptions, its parameters and
/// its actions.
#[derive(Debug)]
struct Metadata {
    shortdesc: String,
    longdesc: String,
    parameters: Vec<Parameter>,
    actions: Vec<String>,
}

/// The `fence_watchkeeper(8)` page from the agent's metadata XML (see `-o metadata`).
fn fence_agent_page(xml: &str) -> Result<String, GenerateError> {
    let meta = parse_metadata(xml)?;
    let mut roff = Roff::new();
    let source = format!("watchkeeper {}", env!("CARGO_PKG_VERSION"));
    roff.control("TH", ["FENCE_WATCHKEEPER", "8", "", &source, MANUAL]);
    roff.control("SH", ["NAME"]);
    roff.text([roman(format!("fence_watchkeeper - {}", meta.shortdesc))]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([
        bold("fence_watchkeeper"),
        roman(" ["),
        italic("OPTIONS"),
        roman("]"),
    ]);
    roff.control("br", [] as [&str; 0]);
    roff.text([
        bold("fence_watchkeeper"),
        roman(" < "),
        italic("parameters"),
    ]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(meta.longdesc.as_str())]);
    roff.control("PP", [] as [&str; 0]);
    roff.text([roman(
        "Pacemaker runs it with no arguments and the parameters as name=value lines on standard \
         input (the names listed under each option below; - and _ are interchangeable, and the \
         legacy names ipaddr, login, passwd and port are accepted). From a shell the same \
         options are given on the command line.",
    )]);
    roff.control("SH", ["OPTIONS"]);
    for p in &meta.parameters {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(p.getopt.as_str())]);
        let mut text = p.description.clone();
        if !text.ends_with('.') {
            text.push('.');
        }
        if !p.choices.is_empty() {
            text.push_str(&format!(" One of: {}.", p.choices.join(", ")));
        }
        if let Some(d) = &p.default {
            text.push_str(&format!(" Default: {d}."));
        }
        if p.required {
            text.push_str(" Required.");
        }
        roff.text([roman(text)]);
        roff.control("br", [] as [&str; 0]);
        roff.text([roman("On standard input: "), bold(p.name.as_str())]);
    }
    roff.control("SH", ["ACTIONS"]);
    roff.text([roman(
        "Given with -o or --action (action= on standard input); reboot when none is given, \
         except for type=ifmib, which has no reboot.",
    )]);
    for a in &meta.actions {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(a.as_str())]);
        roff.text([roman(action_description(a))]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "Success; for status, the node is on."),
        ("1", "Failure, or a usage error."),
        ("2", "For status, the node is off."),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(code)]);
        roff.text([roman(what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("watchkeeper"),
        roman("(1), "),
        bold("stonith_admin"),
        roman("(8), "),
        bold("fence_ipmilan"),
        roman("(8), "),
        bold("fence_redfish"),
        roman("(8), "),
        bold("fence_apc_snmp"),
        roman("(8), "),
        bold("fence_ifmib"),
        roman("(8)"),
    ]);
    Ok(roff.render())
}

fn action_description(action: &str) -> &'static str {
    match action {
        "on" => "Switch the node on and confirm it is on.",
        "off" => "Switch the node off and confirm it is off.",
        "reboot" => "Off, confirmed, then on.",
        "status" => "Print the power state; exit 0 when on, 2 when off.",
        "list" => "List the plugs (outlets, ports) the device has.",
        "list-status" => "List the plugs with their state.",
        "monitor" => "Check that the device answers.",
        "metadata" => "Print the metadata XML Pacemaker reads.",
        "validate-all" => "Check the options and exit.",
        _ => "See the metadata.",
    }
}

/// Reads the parts of the metadata XML the page needs. The XML is the agent's own output (see
/// `fence::pacemaker::metadata`), so this reads that shape and nothing more general.
fn parse_metadata(xml: &str) -> Result<Metadata, GenerateError> {
    let root = tag(xml, "resource-agent").ok_or(GenerateError::Metadata("no <resource-agent>"))?;
    let shortdesc = attribute(root, "shortdesc").ok_or(GenerateError::Metadata(
        "<resource-agent> without shortdesc",
    ))?;
    let longdesc = between(xml, "<longdesc>", "</longdesc>")
        .map(unescape)
        .ok_or(GenerateError::Metadata("no <longdesc>"))?;
    let mut parameters = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<parameter ") {
        let block = &rest[start..];
        let end = block
            .find("</parameter>")
            .ok_or(GenerateError::Metadata("unterminated <parameter>"))?;
        let block = &block[..end];
        rest = &rest[start + end..];
        let head = tag(block, "parameter").ok_or(GenerateError::Metadata("bad <parameter>"))?;
        let name =
            attribute(head, "name").ok_or(GenerateError::Metadata("<parameter> without name"))?;
        let getopt = tag(block, "getopt")
            .and_then(|t| attribute(t, "mixed"))
            .ok_or(GenerateError::Metadata(
                "<parameter> without <getopt mixed>",
            ))?;
        let description = between(block, "<shortdesc lang=\"en\">", "</shortdesc>")
            .map(unescape)
            .ok_or(GenerateError::Metadata("<parameter> without <shortdesc>"))?;
        let default = tag(block, "content").and_then(|t| attribute(t, "default"));
        let mut choices = Vec::new();
        let mut options = block;
        while let Some(i) = options.find("<option ") {
            options = &options[i..];
            if let Some(value) = tag(options, "option").and_then(|t| attribute(t, "value")) {
                choices.push(value);
            }
            options = &options[1..];
        }
        parameters.push(Parameter {
            name,
            getopt,
            required: attribute(head, "required").as_deref() == Some("1"),
            default,
            choices,
            description,
        });
    }
    let mut actions = Vec::new();
    let actions_block =
        between(xml, "<actions>", "</actions>").ok_or(GenerateError::Metadata("no <actions>"))?;
    let mut rest = actions_block;
    while let Some(i) = rest.find("<action ") {
        rest = &rest[i..];
        if let Some(name) = tag(rest, "action").and_then(|t| attribute(t, "name")) {
            actions.push(name);
        }
        rest = &rest[1..];
    }
    if parameters.is_empty() || actions.is_empty() {
        return Err(GenerateError::Metadata("no parameters or no actions"));
    }
    Ok(Metadata {
        shortdesc,
        longdesc,
        parameters,
        actions,
    })
}

/// The inside of the first `<name ...>` (or `<name/>`) tag in `text`: its attributes.
fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name} ");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find('>')?;
    Some(&text[start..start + len])
}

/// The unescaped value of attribute `name` in a tag's inside. Values are escaped by the
/// writer, so a value never contains a raw `"`.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let mut from = 0;
    // The key must start an attribute, not end another one's name (`name` in `shortname`).
    loop {
        let at = from + tag[from..].find(&key)?;
        if at == 0 || tag[..at].ends_with(char::is_whitespace) {
            let start = at + key.len();
            let len = tag[start..].find('"')?;
            return Some(unescape(&tag[start..start + len]));
        }
        from = at + key.len();
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_agent_page_lists_every_parameter_and_action() {
        let xml = crate::fence::pacemaker::metadata();
        let meta = parse_metadata(&xml).expect("metadata parses");
        assert!(meta.parameters.len() > 10, "{:?}", meta.parameters);
        let ip = meta
            .parameters
            .iter()
            .find(|p| p.name == "ip")
            .expect("ip parameter");
        assert!(ip.getopt.contains("--ip"), "{ip:?}");
        let kind = meta
            .parameters
            .iter()
            .find(|p| p.name == "type")
            .expect("type parameter");
        assert_eq!(
            kind.choices,
            ["ipmi", "redfish", "apc-snmp", "ifmib", "modbus"]
        );
        for a in ["on", "off", "reboot", "status", "monitor", "metadata"] {
            assert!(
                meta.actions.iter().any(|x| x == a),
                "{a} in {:?}",
                meta.actions
            );
        }
        let page = fence_agent_page(&xml).expect("page");
        assert!(page.contains("\n.TH FENCE_WATCHKEEPER 8"), "{page}");
        for p in &meta.parameters {
            assert!(page.contains(&format!("\\fB{}\\fR", p.name)), "{}", p.name);
        }
    }

    #[test]
    fn attributes_are_found_by_whole_name_and_unescaped() {
        let t = r#"name="a" shortname="b" desc="x &amp; &quot;y&quot;""#;
        assert_eq!(attribute(t, "name").as_deref(), Some("a"));
        assert_eq!(attribute(t, "shortname").as_deref(), Some("b"));
        assert_eq!(attribute(t, "desc").as_deref(), Some("x & \"y\""));
        assert_eq!(attribute(t, "missing"), None);
    }

    #[test]
    fn broken_metadata_is_an_error_not_a_page() {
        assert!(matches!(
            parse_metadata("<resource-agent name=\"x\">"),
            Err(GenerateError::Metadata(_))
        ));
    }

    #[test]
    fn pages_and_completions_are_written_for_every_visible_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = man_pages(dir.path()).expect("pages");
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for n in [
            "watchkeeper.1",
            "watchkeeper-run.1",
            "watchkeeper-keygen.1",
            "watchkeeper-watchdog.1",
            "fence_watchkeeper.8",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate")),
            "hidden subcommands get no page: {names:?}"
        );
        let top = fs::read_to_string(dir.path().join("watchkeeper.1")).expect("read");
        assert!(top.contains("watchkeeper\\-run(1)"), "{top}");
        assert!(top.contains(".SH FILES"), "{top}");
        assert!(!top.contains("watchkeeper \\- watchkeeper:"), "{top}");

        let scripts = completions(&dir.path().join("completions")).expect("completions");
        assert_eq!(scripts.len(), SHELLS.len());
        for s in &scripts {
            let text = fs::read_to_string(s).expect("read");
            assert!(text.contains("check-config"), "{}", s.display());
            assert!(text.contains("fence"), "{}", s.display());
            assert!(!text.contains("generate-man"), "{}", s.display());
        }
    }
}
