//! Small helpers: random identifiers and timestamps.

/// Fill a buffer from the OS random source. getrandom only fails when the
/// OS has no entropy source at all, which no test machine lacks, so a failure
/// falls back to a time-derived value rather than aborting a request.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if getrandom::fill(&mut buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
    buf
}

/// A random RFC 4122 version-4 UUID, the form Kubernetes uses for metadata.uid.
pub fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random bearer token (hex, 256 bits).
pub fn random_token() -> String {
    random_bytes::<32>()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The 5-character suffix used for `metadata.generateName`, drawn from the same
/// alphabet the real server uses (no vowels, so no accidental words).
pub fn generate_name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>()
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// Current time in the RFC 3339 form Kubernetes uses (second precision, `Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Format a float the way Go's `%v` does for the numbers that appear in
/// validation messages: integral values without a fractional part.
pub fn fmt_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}
