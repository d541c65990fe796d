//! Version, git revision and target, as `harmony --version` prints them.

/// `0.1.0 (abc1234, aarch64-unknown-linux-musl)`.
pub fn long() -> String {
    format!(
        "{} ({}, {})",
        env!("CARGO_PKG_VERSION"),
        env!("HARMONY_GIT_REV"),
        env!("HARMONY_TARGET")
    )
}

/// `0.1.0+abc1234`.
pub fn short() -> String {
    format!("{}+{}", env!("CARGO_PKG_VERSION"), env!("HARMONY_GIT_REV"))
}

/// The target triple the binary was built for.
pub fn target() -> &'static str {
    env!("HARMONY_TARGET")
}
