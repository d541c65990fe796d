//! `scripts/deploy.sh` without a Pi (issue #6): it refuses to deploy when the tests fail or
//! the binary is not a static aarch64 ELF, and then nothing reaches ssh or scp; on success it
//! runs exactly the expected ssh/scp commands. `ssh`, `scp`, `cargo`, `cross` and `docker` are
//! stand-ins on PATH that record their arguments (scp also "copies" into a local directory).
//! The Pi side, `boards/rpi4b/install.sh`, runs into a scratch root (DESTDIR) to check the
//! files it installs and that an edited board file is never overwritten silently.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEP: char = '\u{1f}';

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory with recording stand-ins for the tools deploy.sh calls.
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let remote = dir.path().join("remote");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&remote).unwrap();
        let log = dir.path().join("calls.log");
        // Every stand-in logs "name<US>arg1<US>arg2..." as one line.
        let record = format!(
            "#!/bin/sh\nname=$(basename \"$0\")\n{{ printf '%s' \"$name\"; for a in \"$@\"; do printf '\\037%s' \"$a\"; done; printf '\\n'; }} >> '{}'\n",
            log.display()
        );
        let scripts = [
            ("ssh", format!("{record}exit 0\n")),
            (
                "scp",
                format!(
                    "{record}for a in \"$@\"; do [ -f \"$a\" ] && cp \"$a\" '{}/'; done\nexit 0\n",
                    remote.display()
                ),
            ),
            ("cargo", format!("{record}exit 1\n")),
            ("cross", format!("{record}exit 1\n")),
            ("docker", format!("{record}exit 1\n")),
        ];
        for (name, text) in scripts {
            let p = bin.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fakes { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remote(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    /// The recorded calls, each as [tool, args...].
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(SEP).map(str::to_owned).collect())
            .collect()
    }

    /// Runs deploy.sh with the stand-ins first on PATH.
    fn deploy(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("bash");
        c.arg(repo().join("scripts/deploy.sh"))
            .args(args)
            .current_dir(repo())
            .env("PATH", path)
            .env("TMPDIR", self.dir.path())
            .env_remove("HARMONY_TEST_CMD")
            .env_remove("HARMONY_DEPLOY_BINARY")
            .env_remove("HARMONY_REMOTE_SUDO")
            .env_remove("CARGO_TARGET_DIR")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run bash scripts/deploy.sh")
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const EM_386: u16 = 3;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// A minimal ELF image: header plus program headers (PT_LOAD, and PT_INTERP when `dynamic`).
fn elf(class: u8, machine: u16, dynamic: bool) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = 1; // little-endian
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN (static-pie looks like this)
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    let types: &[u32] = if dynamic { &[6, 3, 1] } else { &[6, 1, 1] };
    h[56..58].copy_from_slice(&(types.len() as u16).to_le_bytes());
    for t in types {
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&t.to_le_bytes());
        h.extend(ph);
    }
    h.extend(vec![0u8; 256]);
    h
}

fn no_remote_activity(f: &Fakes, o: &Output) {
    let calls = f.calls();
    assert!(
        calls.iter().all(|c| c[0] != "ssh" && c[0] != "scp"),
        "nothing may reach ssh/scp after a refusal: {calls:?}\n{}",
        stderr(o)
    );
    assert_eq!(
        std::fs::read_dir(f.remote()).unwrap().count(),
        0,
        "nothing copied"
    );
}

/// Issue #6: a binary that is not a static aarch64 ELF is refused before anything is copied.
#[test]
fn refuses_a_binary_that_is_not_static_aarch64() {
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "x86-64",
            elf(2, EM_X86_64, false),
            "built for x86-64, not aarch64",
        ),
        ("i386", elf(1, EM_386, false), "32-bit"),
        ("armhf", elf(1, EM_ARM, false), "32-bit"),
        (
            "aarch64-dynamic",
            elf(2, EM_AARCH64, true),
            "dynamically linked",
        ),
        (
            "script",
            b"#!/bin/sh\necho hello from a script\n".repeat(4),
            "not an ELF",
        ),
        ("empty", Vec::new(), "not an ELF"),
    ];
    for (name, bytes, why) in cases {
        let f = Fakes::new();
        let bin = f.write(name, &bytes);
        let o = f.deploy(
            &["--binary", bin.to_str().unwrap(), "pi@drone"],
            &[("HARMONY_TEST_CMD", "true")],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(4), "{name}: {err}");
        assert!(err.contains("REFUSING TO DEPLOY"), "{name}: {err}");
        assert!(err.contains(why), "{name}: expected {why:?} in {err}");
        no_remote_activity(&f, &o);
    }
}

/// Issue #6: the binary this test suite built is judged by its header: refused when it is the
/// host's x86-64 build, accepted when it is the static aarch64 build (tests under qemu).
#[test]
fn the_real_harmony_binary_is_checked() {
    let f = Fakes::new();
    let real = env!("CARGO_BIN_EXE_harmony");
    let o = f.deploy(
        &["--binary", real, "pi@drone"],
        &[("HARMONY_TEST_CMD", "true")],
    );
    let err = stderr(&o);
    if cfg!(all(target_arch = "aarch64", target_env = "musl")) {
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains("static aarch64 ELF"), "{err}");
        assert_eq!(
            std::fs::read(f.remote().join("harmony")).unwrap(),
            std::fs::read(real).unwrap()
        );
    } else if cfg!(target_arch = "x86_64") {
        assert_eq!(o.status.code(), Some(4), "{err}");
        assert!(err.contains("x86-64, not aarch64"), "{err}");
        no_remote_activity(&f, &o);
    }
}

/// Issue #6: failing tests stop the deploy before the build and before any copy.
#[test]
fn refuses_when_the_tests_fail() {
    for cmd in ["false", "echo 'test result: FAILED'; exit 101"] {
        let f = Fakes::new();
        let o = f.deploy(&["pi@drone"], &[("HARMONY_TEST_CMD", cmd)]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{cmd}: {err}");
        assert!(err.contains("REFUSING TO DEPLOY"), "{err}");
        assert!(err.contains("tests failed"), "{err}");
        assert!(
            f.calls().is_empty(),
            "no build, no ssh, no scp: {:?}",
            f.calls()
        );
        no_remote_activity(&f, &o);
    }
    // Also with a good binary in hand: the tests still gate it.
    let f = Fakes::new();
    let bin = f.write("harmony", &elf(2, EM_AARCH64, false));
    let o = f.deploy(
        &["--binary", bin.to_str().unwrap(), "pi@drone"],
        &[("HARMONY_TEST_CMD", "false")],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    no_remote_activity(&f, &o);
}

const BUNDLE: [&str; 11] = [
    "harmony",
    "board.toml",
    "install.sh",
    "harmony.service",
    "harmony-sysusers.conf",
    "60-harmony-devices.rules",
    "harmony-modules.conf",
    "80-can0.network",
    "harmony-uplink-key.service",
    "make-uplink-key",
    "README.md",
];

/// Issue #6: with passing tests and a good binary, exactly three remote commands run:
/// create a private directory, copy the bundle, run the installer with sudo.
#[test]
fn deploys_with_exactly_these_commands() {
    let f = Fakes::new();
    let bin = f.write("harmony-aarch64", &elf(2, EM_AARCH64, false));
    let ran = f.path().join("tests-ran");
    let test_cmd = format!("touch '{}'", ran.display());
    let o = f.deploy(
        &[
            "--binary",
            bin.to_str().unwrap(),
            "pi@drone",
            "-o",
            "Port=2222",
            "-i",
            "/nonexistent/key",
        ],
        &[("HARMONY_TEST_CMD", &test_cmd)],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(ran.exists(), "the test command ran");
    let calls = f.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let opts = ["-o", "Port=2222", "-i", "/nonexistent/key"];

    // 1. mkdir -m 700 /tmp/harmony-deploy.<stamp>.<pid>
    assert_eq!(calls[0][0], "ssh");
    assert_eq!(calls[0][1..5], opts);
    assert_eq!(calls[0][5], "pi@drone");
    let mkdir = &calls[0][6];
    let dir = mkdir
        .strip_prefix("mkdir -m 700 ")
        .unwrap_or_else(|| panic!("{mkdir}"));
    assert!(dir.starts_with("/tmp/harmony-deploy."), "{dir}");
    assert_eq!(calls[0].len(), 7);

    // 2. scp OPTS -q FILES... pi@drone:DIR/
    let mut want = vec!["scp".to_owned()];
    want.extend(opts.iter().map(|s| s.to_string()));
    want.push("-q".into());
    want.extend(BUNDLE.iter().map(|s| s.to_string()));
    want.push(format!("pi@drone:{dir}/"));
    assert_eq!(calls[1], want);

    // 3. ssh OPTS pi@drone "sudo sh DIR/install.sh"
    let mut want = vec!["ssh".to_owned()];
    want.extend(opts.iter().map(|s| s.to_string()));
    want.push("pi@drone".into());
    want.push(format!("sudo sh {dir}/install.sh"));
    assert_eq!(calls[2], want);

    // What arrived is the bundle: the checked binary, the Pi board file, the unit.
    assert_eq!(
        std::fs::read(f.remote().join("harmony")).unwrap(),
        std::fs::read(&bin).unwrap()
    );
    assert_eq!(
        std::fs::read(f.remote().join("board.toml")).unwrap(),
        std::fs::read(repo().join("boards/rpi4b.toml")).unwrap()
    );
    assert_eq!(
        std::fs::read(f.remote().join("harmony.service")).unwrap(),
        std::fs::read(repo().join("boards/rpi4b/harmony.service")).unwrap()
    );
    for name in BUNDLE {
        assert!(f.remote().join(name).exists(), "{name} copied");
    }
}

/// Issue #6: root@HOST needs no sudo; --replace-board is passed on to the installer.
#[test]
fn root_login_and_replace_board() {
    let f = Fakes::new();
    let bin = f.write("h", &elf(2, EM_AARCH64, false));
    let o = f.deploy(
        &[
            "--binary",
            bin.to_str().unwrap(),
            "--replace-board",
            "root@drone",
        ],
        &[("HARMONY_TEST_CMD", "true")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let calls = f.calls();
    let last = calls.last().unwrap();
    assert_eq!(last[0], "ssh");
    assert_eq!(last[1], "root@drone");
    assert!(
        last[2].starts_with("sh /tmp/harmony-deploy.")
            && last[2].ends_with("/install.sh --replace-board"),
        "{last:?}"
    );
}

/// Issue #6: --dry-run prints the test, build, copy and install commands and runs none.
#[test]
fn dry_run_prints_and_runs_nothing() {
    let f = Fakes::new();
    let o = f.deploy(&["--dry-run", "pi@drone"], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    for want in [
        "would run: sh -c scripts/test.sh",
        "would run: cargo build --locked --release --target aarch64-unknown-linux-musl",
        "would run: ssh pi@drone",
        "would run: scp -q harmony board.toml install.sh",
        "install.sh",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    let calls = f.calls();
    assert!(
        calls.iter().all(|c| c[0] == "docker"),
        "only the read-only `docker info` probe may run: {calls:?}"
    );
}

/// Issue #6: --skip-tests is the one way past the tests, and it says so loudly.
#[test]
fn skip_tests_is_explicit_and_loud() {
    let f = Fakes::new();
    let bin = f.write("h", &elf(2, EM_AARCH64, false));
    let ran = f.path().join("tests-ran");
    let test_cmd = format!("touch '{}'; false", ran.display());
    let o = f.deploy(
        &[
            "--skip-tests",
            "--binary",
            bin.to_str().unwrap(),
            "pi@drone",
        ],
        &[("HARMONY_TEST_CMD", &test_cmd)],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("WITHOUT running the tests"), "{err}");
    assert!(!ran.exists());
    // But the binary check is never skipped.
    let bad = f.write("x86", &elf(2, EM_X86_64, false));
    let o = f.deploy(
        &[
            "--skip-tests",
            "--binary",
            bad.to_str().unwrap(),
            "pi@drone",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}

/// Issue #6: bad usage is exit code 2 and touches nothing.
#[test]
fn usage_errors() {
    let f = Fakes::new();
    for args in [
        &[][..],
        &["--frobnicate", "pi@drone"][..],
        &["--board", "/no/such/board.toml", "pi@drone"][..],
        &["--builder", "make", "pi@drone"][..],
    ] {
        let o = f.deploy(args, &[("HARMONY_TEST_CMD", "true")]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert!(f.calls().is_empty());
    let o = f.deploy(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--skip-tests"));
}

/// Runs install.sh from a bundle directory into `root` (DESTDIR), with `uname` saying
/// aarch64.
fn install(bundle: &Path, root: &Path, fakes: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        fakes.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg(bundle.join("install.sh"))
        .args(args)
        .env("DESTDIR", root)
        .env("PATH", path)
        .output()
        .unwrap()
}

/// Issue #6: the Pi side installs every file where the unit and the board expect it, and an
/// edited board file survives a redeploy unless --replace-board is given.
#[test]
fn install_sh_places_files_and_keeps_an_edited_board() {
    let t = tempfile::tempdir().unwrap();
    let fakes = t.path().join("fakes");
    std::fs::create_dir_all(&fakes).unwrap();
    let uname = fakes.join("uname");
    std::fs::write(&uname, "#!/bin/sh\necho aarch64\n").unwrap();
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).unwrap();

    let bundle = t.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    for (from, to) in [
        ("boards/rpi4b/install.sh", "install.sh"),
        ("boards/rpi4b/harmony.service", "harmony.service"),
        (
            "boards/rpi4b/harmony-sysusers.conf",
            "harmony-sysusers.conf",
        ),
        (
            "boards/rpi4b/60-harmony-devices.rules",
            "60-harmony-devices.rules",
        ),
        ("boards/rpi4b/harmony-modules.conf", "harmony-modules.conf"),
        ("boards/rpi4b/80-can0.network", "80-can0.network"),
        (
            "boards/rpi4b/harmony-uplink-key.service",
            "harmony-uplink-key.service",
        ),
        ("boards/rpi4b/make-uplink-key", "make-uplink-key"),
        ("boards/rpi4b/README.md", "README.md"),
        ("boards/rpi4b.toml", "board.toml"),
    ] {
        std::fs::copy(repo().join(from), bundle.join(to)).unwrap();
    }
    // Stands in for the aarch64 binary: install.sh runs `harmony --version` before using it.
    std::fs::write(
        bundle.join("harmony"),
        "#!/bin/sh\necho 'harmony 0.1.0 (test, aarch64-unknown-linux-musl)'\n",
    )
    .unwrap();

    let root = t.path().join("root");
    let o = install(&bundle, &root, &fakes, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(o.status.success(), "{out}");
    for (path, src) in [
        ("usr/local/bin/harmony", "harmony"),
        ("etc/harmony/board.toml", "board.toml"),
        ("etc/systemd/system/harmony.service", "harmony.service"),
        ("etc/sysusers.d/harmony.conf", "harmony-sysusers.conf"),
        (
            "etc/udev/rules.d/60-harmony-devices.rules",
            "60-harmony-devices.rules",
        ),
        ("etc/modules-load.d/harmony.conf", "harmony-modules.conf"),
        ("etc/systemd/network/80-can0.network", "80-can0.network"),
        ("usr/local/share/doc/harmony/README.md", "README.md"),
        // Issue #11: the uplink key of this Pi, made before the firmware's first start.
        (
            "etc/systemd/system/harmony-uplink-key.service",
            "harmony-uplink-key.service",
        ),
        ("usr/local/lib/harmony/make-uplink-key", "make-uplink-key"),
    ] {
        assert_eq!(
            std::fs::read(root.join(path)).unwrap_or_default(),
            std::fs::read(bundle.join(src)).unwrap(),
            "{path}"
        );
    }
    let mode = std::fs::metadata(root.join("usr/local/bin/harmony"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let mode = std::fs::metadata(root.join("usr/local/lib/harmony/make-uplink-key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(!root.join("usr/local/bin/harmony.new").exists());
    if common::require_or_skip(
        which("systemd-sysusers"),
        "systemd-sysusers (scripts/setup.sh installs systemd)",
    ) {
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd.lines().any(|l| l.starts_with("harmony:")),
            "{passwd}"
        );
    }

    // Someone edits the board file on the Pi; a redeploy keeps it.
    let board = root.join("etc/harmony/board.toml");
    let edited = "# edited on the Pi\n".to_owned() + &std::fs::read_to_string(&board).unwrap();
    std::fs::write(&board, &edited).unwrap();
    let o = install(&bundle, &root, &fakes, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&board).unwrap(), edited);
    assert_eq!(
        std::fs::read(root.join("etc/harmony/board.toml.new")).unwrap(),
        std::fs::read(bundle.join("board.toml")).unwrap()
    );
    assert!(out.contains("KEPT"), "{out}");

    // --replace-board replaces it and keeps a backup.
    let o = install(&bundle, &root, &fakes, &["--replace-board"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&board).unwrap(),
        std::fs::read(bundle.join("board.toml")).unwrap()
    );
    let backups: Vec<_> = std::fs::read_dir(root.join("etc/harmony"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("board.toml.bak-")
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(std::fs::read_to_string(backups[0].path()).unwrap(), edited);

    // On anything but aarch64 it refuses.
    std::fs::write(&uname, "#!/bin/sh\necho x86_64\n").unwrap();
    let o = install(&bundle, &t.path().join("root2"), &fakes, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("x86_64"), "{}", stderr(&o));
    assert!(!t.path().join("root2/usr/local/bin/harmony").exists());
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}
