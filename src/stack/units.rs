//! Durations ("250ms", "1m30s"), sizes ("1MiB") and env files (dotenv format).

use std::time::Duration;

/// Parses "250ms", "5s", "2m", "1h", or compounds like "1m30s".
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}` needs a unit, e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (e.g. \"500ms\", \"5s\", \"1m30s\")"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{}` is not a number", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "" => return Err(format!("`{text}` needs a unit after {number}")),
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
                ));
            }
        };
        if !seconds.is_finite() || seconds > 1e9 {
            return Err(format!("`{text}` is too long"));
        }
        total += Duration::from_secs_f64(seconds);
    }
    Ok(total)
}

/// Parses "512B", "64KiB", "1MiB", "2GiB", "10KB", "1MB" or plain bytes.
pub fn size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. \"64KiB\", \"1MiB\")"))?;
    let unit = text[digits..].trim();
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses an env file: `KEY=VALUE` lines, `#` comments, optional `export `, values optionally
/// in single or double quotes. Returns the variables or the 1-based line of the first bad one.
pub fn dotenv(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((index + 1, format!("expected KEY=VALUE, found `{line}`")));
        };
        let key = key.trim();
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || key.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err((index + 1, format!("`{key}` is not a variable name")));
        }
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            value[1..value.len() - 1].to_string()
        } else {
            // An unquoted value ends at a comment.
            value
                .split_once(" #")
                .map_or(value, |(v, _)| v)
                .trim()
                .to_string()
        };
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("0.5s"), Ok(Duration::from_millis(500)));
        assert!(duration("5").unwrap_err().contains("needs a unit"));
        assert!(duration("5 parsecs").is_err());
        assert!(duration("s").is_err());
        assert!(duration("").is_err());
        assert!(duration("99999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("1000"), Ok(1000));
        assert!(size("1 parsec").is_err());
        assert!(size("-1").is_err());
    }

    #[test]
    fn env_files() {
        let vars =
            dotenv("# comment\nexport A=1\nB = \"two words\"\nC='x=y'\nD=plain # trailing\n\n")
                .unwrap();
        assert_eq!(
            vars,
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into()),
                ("D".into(), "plain".into())
            ]
        );
        assert_eq!(dotenv("A=1\nnonsense\n").unwrap_err().0, 2);
        assert_eq!(dotenv("1X=2").unwrap_err().0, 1);
    }
}
