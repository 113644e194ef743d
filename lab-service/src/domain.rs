//! Allocation rules, free of HTTP and database code: which labs may take a booking, in which order.

/// A lab that offers the booked test in the booked city, with its load on the booked date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub lab_id: i64,
    pub used: i64,
    pub capacity: i64,
}

/// The order to try candidates in: least loaded first (by share of capacity used), then by id.
pub fn preference_order(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.retain(|c| c.used < c.capacity);
    // Compare used/capacity without floating point: a.used * b.capacity vs b.used * a.capacity.
    candidates.sort_by(|a, b| (a.used * b.capacity).cmp(&(b.used * a.capacity)).then(a.lab_id.cmp(&b.lab_id)));
    candidates
}

/// Why no lab was found.
pub fn rejection_reason(n_offering: usize) -> String {
    if n_offering == 0 {
        "no lab in this city offers this test".to_string()
    } else {
        "every lab offering this test in this city is fully booked on that date".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_first_and_full_labs_skipped() {
        let order = preference_order(vec![
            Candidate { lab_id: 1, used: 5, capacity: 10 },
            Candidate { lab_id: 2, used: 1, capacity: 4 },
            Candidate { lab_id: 3, used: 3, capacity: 3 },
        ]);
        assert_eq!(order.iter().map(|c| c.lab_id).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn equal_shares_go_to_the_lower_lab_id() {
        let order = preference_order(vec![
            Candidate { lab_id: 9, used: 2, capacity: 4 },
            Candidate { lab_id: 4, used: 1, capacity: 2 },
            Candidate { lab_id: 6, used: 0, capacity: 0 },
        ]);
        assert_eq!(order.iter().map(|c| c.lab_id).collect::<Vec<_>>(), [4, 9], "a lab of no capacity never takes one");
    }

    #[test]
    fn rejections_say_why() {
        assert!(rejection_reason(0).contains("no lab"));
        assert!(rejection_reason(2).contains("fully booked"));
    }
}
