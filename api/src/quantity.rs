//! Byte sizes as users write them (`10Gi`, `500M`, `1073741824`) and as tables print them.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("size {0:?} is empty")]
    Empty(String),
    #[error(
        "size {0:?} is not a number with an optional unit (examples: 10Gi, 500Mi, 2T, 1073741824)"
    )]
    Malformed(String),
    #[error("unit {unit:?} in size {input:?} is not known; use one of Ki Mi Gi Ti Pi, K M G T P, or plain bytes")]
    UnknownUnit { input: String, unit: String },
    #[error("size {0:?} does not fit in 63 bits")]
    Overflow(String),
}

/// Parses a Kubernetes-style quantity into bytes. Decimal fractions are accepted when the
/// result is a whole number of bytes (`1.5Gi`).
pub fn parse_size(input: &str) -> Result<i64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty(input.to_string()));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(SizeError::Malformed(input.to_string()));
    }
    let mult: u128 = match unit {
        "" | "B" => 1,
        "k" | "K" | "KB" => 1000,
        "M" | "MB" => 1000u128.pow(2),
        "G" | "GB" => 1000u128.pow(3),
        "T" | "TB" => 1000u128.pow(4),
        "P" | "PB" => 1000u128.pow(5),
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        "Pi" | "PiB" => 1 << 50,
        other => {
            return Err(SizeError::UnknownUnit {
                input: input.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part
            .parse()
            .map_err(|_| SizeError::Overflow(input.to_string()))?
    };
    let mut total = int
        .checked_mul(mult)
        .ok_or_else(|| SizeError::Overflow(input.to_string()))?;
    if !frac_part.is_empty() {
        if frac_part.len() > 18 {
            return Err(SizeError::Malformed(input.to_string()));
        }
        let frac: u128 = frac_part
            .parse()
            .map_err(|_| SizeError::Malformed(input.to_string()))?;
        let scale = 10u128.pow(frac_part.len() as u32);
        let scaled = frac * mult;
        if !scaled.is_multiple_of(scale) {
            return Err(SizeError::Malformed(input.to_string()));
        }
        total += scaled / scale;
    }
    i64::try_from(total).map_err(|_| SizeError::Overflow(input.to_string()))
}

/// Formats bytes with binary units and at most one decimal, the way `kubectl` users read
/// capacities (`1.5Gi`, `300Mi`, `512B`).
pub fn format_size(bytes: i64) -> String {
    const UNITS: [(&str, i64); 5] = [
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    if bytes < 0 {
        return format!("-{}", format_size(bytes.saturating_neg()));
    }
    for (name, size) in UNITS {
        if bytes >= size {
            let whole = bytes / size;
            let tenth = (bytes % size) * 10 / size;
            return if tenth == 0 {
                format!("{whole}{name}")
            } else {
                format!("{whole}.{tenth}{name}")
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size(" 4096 "), Ok(4096));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
    }

    #[test]
    fn rejects_bad_sizes_with_reasons() {
        assert_eq!(parse_size(""), Err(SizeError::Empty(String::new())));
        assert!(matches!(parse_size("ten"), Err(SizeError::Malformed(_))));
        assert!(matches!(
            parse_size("10Xi"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_size("1.2.3G"), Err(SizeError::Malformed(_))));
        assert!(matches!(
            parse_size("99999999Pi"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(parse_size("0.3"), Err(SizeError::Malformed(_))));
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(512), "512B");
        assert_eq!(format_size(1 << 30), "1Gi");
        assert_eq!(format_size(3 << 29), "1.5Gi");
        assert_eq!(format_size(300 << 20), "300Mi");
    }
}
