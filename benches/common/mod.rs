//! Helpers shared by the bench binaries: CPU time from /proc and argument filtering.
#![allow(dead_code)]

/// Clock ticks per second of /proc's times.
pub fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// utime + stime of a /proc `stat` file's text.
fn ticks_of(stat: &str) -> u64 {
    let Some(i) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// CPU ticks of a whole process.
pub fn process_ticks(pid: u32) -> u64 {
    ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU ticks of a process and of every process below it (the firmware's process subtrees).
pub fn tree_ticks(pid: u32) -> u64 {
    let mut total = process_ticks(pid);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += tree_ticks(child);
        }
    }
    total
}

/// CPU ticks of a process's threads with these names.
pub fn thread_ticks(pid: u32, names: &[&str]) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            names.contains(&comm.trim())
        })
        .map(|e| ticks_of(&std::fs::read_to_string(e.path().join("stat")).unwrap_or_default()))
        .sum()
}

/// The `p` quantile (0..=1) of `v`.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Which figures to run: words on the command line select by substring; none means all
/// (`cargo bench` itself passes `--bench`).
pub fn wanted() -> impl Fn(&str) -> bool {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    move |n: &str| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str()))
}

/// Starts `harmony run` in `dir` on the simulated board with the CAN replay's pacing
/// (`speed = 1.0`) replaced by `replay` (lines of `[can.replay]`, e.g. `fps = 16000.0\n`).
pub fn spawn_sim(dir: &std::path::Path, replay: &str) -> std::process::Child {
    spawn_sim_split(dir, replay, true)
}

/// [`spawn_sim`] with the sensors in a child process (`split`, the sim and Pi boards' default)
/// or every processor a thread of one process.
pub fn spawn_sim_split(dir: &std::path::Path, replay: &str, split: bool) -> std::process::Child {
    let paced = "[can.replay]\ncapture = \"builtin:canboat\"\nspeed = 1.0\n";
    assert!(
        harmony::board::SIM_BOARD.contains(paced),
        "the sim board changed"
    );
    let split_line = "[processes]\nsensors = true";
    assert!(harmony::board::SIM_BOARD.contains(split_line));
    let text = harmony::board::SIM_BOARD
        .replace(
            paced,
            &format!("[can.replay]\ncapture = \"builtin:canboat\"\n{replay}"),
        )
        .replace(split_line, &format!("[processes]\nsensors = {split}"));
    let board = dir.join("board.toml");
    std::fs::write(&board, text).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_harmony"))
        .args(["run", "--board"])
        .arg(&board)
        .args(["--log-level", "warn"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn harmony")
}
