//! Allocation rules, free of HTTP and database code: which labs may take a booking, in which order, and
//! the decisions for a batch of bookings made one after the other against the same day loads.

use std::collections::{BTreeMap, BTreeSet};

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

/// A lab of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    pub id: i64,
    pub city: String,
    pub daily_capacity: i64,
    pub tests: BTreeSet<String>,
}

/// What a booking asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub city: String,
    pub test_type: String,
    pub date: String,
}

/// A lab's load on a day: `(used, capacity)`, keyed by `(lab id, date)`.
pub type DayLoads = BTreeMap<(i64, String), (i64, i64)>;

/// The decision for one booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Lab(i64),
    Rejected(String),
}

/// The labs that offer the request's test in its city.
pub fn offering<'a>(labs: &'a [Lab], request: &'a Request) -> impl Iterator<Item = &'a Lab> + 'a {
    labs.iter().filter(move |lab| lab.city == request.city && lab.tests.contains(&request.test_type))
}

/// The `(lab, date)` day rows a batch may touch, each with the capacity a new row starts with.
pub fn days_needed(labs: &[Lab], requests: &[Request]) -> BTreeMap<(i64, String), i64> {
    requests
        .iter()
        .flat_map(|request| offering(labs, request).map(|lab| ((lab.id, request.date.clone()), lab.daily_capacity)))
        .collect()
}

/// Decides each request in order, as if one at a time: the least loaded lab with room on the date takes
/// it, and its load grows for the next request. `loads` must hold every row of [`days_needed`]; it is
/// updated in place.
pub fn plan(labs: &[Lab], loads: &mut DayLoads, requests: &[Request]) -> Vec<Choice> {
    requests
        .iter()
        .map(|request| {
            let candidates: Vec<Candidate> = offering(labs, request)
                .map(|lab| {
                    let (used, capacity) = loads[&(lab.id, request.date.clone())];
                    Candidate { lab_id: lab.id, used, capacity }
                })
                .collect();
            let offered = candidates.len();
            match preference_order(candidates).first() {
                Some(chosen) => {
                    loads.get_mut(&(chosen.lab_id, request.date.clone())).expect("a candidate's day").0 += 1;
                    Choice::Lab(chosen.lab_id)
                }
                None => Choice::Rejected(rejection_reason(offered)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lab(id: i64, city: &str, capacity: i64, tests: &[&str]) -> Lab {
        Lab { id, city: city.into(), daily_capacity: capacity, tests: tests.iter().map(|t| t.to_string()).collect() }
    }

    fn request(city: &str, test: &str, date: &str) -> Request {
        Request { city: city.into(), test_type: test.into(), date: date.into() }
    }

    fn fresh_loads(labs: &[Lab], requests: &[Request]) -> DayLoads {
        days_needed(labs, requests).into_iter().map(|(day, capacity)| (day, (0, capacity))).collect()
    }

    #[test]
    fn a_batch_spreads_over_labs_and_rejects_once_full() {
        let labs =
            [lab(1, "Pune", 2, &["thyroid"]), lab(2, "Pune", 1, &["thyroid", "lipid"]), lab(3, "Goa", 5, &["thyroid"])];
        let requests = vec![request("Pune", "thyroid", "d"); 4];
        let mut loads = fresh_loads(&labs, &requests);
        let choices = plan(&labs, &mut loads, &requests);
        assert_eq!(choices[..3], [Choice::Lab(1), Choice::Lab(2), Choice::Lab(1)]);
        assert!(matches!(&choices[3], Choice::Rejected(reason) if reason.contains("fully booked")));
        let elsewhere = plan(&labs, &mut loads, &[request("Pune", "covid", "d")]);
        assert!(matches!(&elsewhere[0], Choice::Rejected(reason) if reason.contains("no lab")));
    }

    fn catalog() -> impl Strategy<Value = Vec<Lab>> {
        let cities = prop::sample::select(vec!["Pune", "Delhi"]);
        let tests = prop::collection::btree_set(prop::sample::select(vec!["thyroid", "lipid", "covid"]), 0..3);
        prop::collection::vec((cities, 0i64..4, tests), 0..5).prop_map(|labs| {
            labs.into_iter()
                .enumerate()
                .map(|(i, (city, capacity, tests))| Lab {
                    id: i as i64 + 1,
                    city: city.to_string(),
                    daily_capacity: capacity,
                    tests: tests.into_iter().map(str::to_string).collect(),
                })
                .collect()
        })
    }

    fn requests() -> impl Strategy<Value = Vec<Request>> {
        let one = (
            prop::sample::select(vec!["Pune", "Delhi"]),
            prop::sample::select(vec!["thyroid", "lipid", "covid"]),
            prop::sample::select(vec!["d1", "d2"]),
        );
        prop::collection::vec(one.prop_map(|(c, t, d)| request(c, t, d)), 0..30)
    }

    proptest! {
        /// A batch never overbooks a day, gives every request one decision from a lab that offers it, and
        /// rejects only when every offering lab is full; and it decides exactly as one request at a time would.
        #[test]
        fn a_batch_never_overbooks_and_decides_as_one_at_a_time(labs in catalog(), requests in requests(), used in 0i64..3) {
            let mut loads = fresh_loads(&labs, &requests);
            for (used_now, capacity) in loads.values_mut() {
                *used_now = used.min(*capacity);
            }
            let start = loads.clone();
            let choices = plan(&labs, &mut loads, &requests);
            prop_assert_eq!(choices.len(), requests.len());
            for ((lab, date), (used_now, capacity)) in &loads {
                let taken = requests.iter().zip(&choices).filter(|(r, c)| **c == Choice::Lab(*lab) && &r.date == date).count() as i64;
                prop_assert!(used_now <= capacity, "day ({lab}, {date}) overbooked");
                prop_assert_eq!(*used_now, start[&(*lab, date.clone())].0 + taken);
            }
            for (request, choice) in requests.iter().zip(&choices) {
                match choice {
                    Choice::Lab(id) => prop_assert!(offering(&labs, request).any(|lab| lab.id == *id)),
                    Choice::Rejected(_) => {}
                }
            }
            // One at a time, each against the loads the previous ones left.
            let mut one_by_one = start.clone();
            let singles: Vec<Choice> = requests.iter().flat_map(|r| plan(&labs, &mut one_by_one, std::slice::from_ref(r))).collect();
            prop_assert_eq!(&singles, &choices);
            // Rejections as "fully booked" only when every offering lab was full at that point.
            let mut replay = start;
            for (request, choice) in requests.iter().zip(&choices) {
                if let Choice::Rejected(reason) = choice {
                    let full = offering(&labs, request).all(|lab| {
                        let (u, c) = replay[&(lab.id, request.date.clone())];
                        u >= c
                    });
                    prop_assert!(full, "{reason}");
                }
                plan(&labs, &mut replay, std::slice::from_ref(request));
            }
        }
    }

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
