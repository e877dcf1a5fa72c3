//! Figures of the read model as people read them, the same in the console, `ps` and logs.

/// `45s`, `12m34s`, `3h07m`, `2d04h`.
pub fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// `-` for nothing, else K, M or G (binary).
pub fn bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    match n {
        0 => "-".into(),
        n if n < MIB => format!("{}K", n / 1024),
        n if n < 1024 * MIB => format!("{:.1}M", n as f64 / MIB as f64),
        n => format!("{:.1}G", n as f64 / (1024 * MIB) as f64),
    }
}
