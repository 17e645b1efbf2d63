//! RFC 3339 timestamps in UTC, formatted by `jiff` (the maintained date-time crate already in
//! kiln's dependency tree through gix).

use std::time::{SystemTime, UNIX_EPOCH};

/// `secs.nanos` since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (nine fraction digits, as
/// runc writes its `created` times); `None` beyond jiff's range (years -9999 to 9999).
pub fn rfc3339_nanos(secs: i64, nanos: u32) -> Option<String> {
    let ts = jiff::Timestamp::new(secs, i32::try_from(nanos).ok()?).ok()?;
    Some(ts.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string())
}

/// Whole seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (OCI image `created` times).
pub fn rfc3339_secs(secs: i64) -> Option<String> {
    let ts = jiff::Timestamp::from_second(secs).ok()?;
    Some(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Now, as [`rfc3339_nanos`] formats it.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    rfc3339_nanos(secs, d.subsec_nanos()).unwrap_or_else(|| "9999-12-31T23:59:59.999999999Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_as_runc_and_oci_write_them() {
        assert_eq!(
            rfc3339_nanos(0, 0).as_deref(),
            Some("1970-01-01T00:00:00.000000000Z")
        );
        assert_eq!(
            rfc3339_nanos(951_782_400, 5).as_deref(),
            Some("2000-02-29T00:00:00.000000005Z")
        );
        assert_eq!(
            rfc3339_secs(1_700_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(rfc3339_secs(i64::MAX), None);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
