//! Analytics arithmetic, free of HTTP and database code.

/// The nearest-rank percentile (`p` in 0..=100) of unsorted values; `None` when there are none.
/// Matches PostgreSQL's `percentile_disc(p / 100)`.
pub fn percentile(values: &mut [i64], p: u32) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((u64::from(p) * values.len() as u64).div_ceil(100)).max(1) as usize;
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut values: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut values, 50), Some(50));
        assert_eq!(percentile(&mut values, 95), Some(95));
        assert_eq!(percentile(&mut [7], 95), Some(7));
        assert_eq!(percentile(&mut [], 50), None);
    }
}
