//! Assignment strategies, run by the coordinator: `range`, `roundrobin` and `cooperative-sticky`.
//! They compute each member's target partitions; the coordinator moves a partition only after its
//! previous owner released it, so no partition ever has two owners.

use std::collections::{BTreeMap, BTreeSet};

pub type TopicPartition = (String, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Strategy {
    pub fn parse(name: &str) -> Option<Strategy> {
        match name {
            "range" => Some(Strategy::Range),
            "roundrobin" => Some(Strategy::RoundRobin),
            "cooperative-sticky" => Some(Strategy::CooperativeSticky),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Range => "range",
            Strategy::RoundRobin => "roundrobin",
            Strategy::CooperativeSticky => "cooperative-sticky",
        }
    }
}

/// What the assignor knows of a member.
pub struct MemberSpec<'a> {
    pub id: &'a str,
    pub topics: &'a BTreeSet<String>,
    pub owned: &'a BTreeSet<TopicPartition>,
}

/// Targets for every member (each member appears, possibly with nothing). `partition_counts` holds the
/// existing topics; subscribed topics that do not exist are ignored.
pub fn assign(
    strategy: Strategy,
    members: &[MemberSpec<'_>],
    partition_counts: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut sorted: Vec<&MemberSpec<'_>> = members.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(b.id));
    let mut targets: BTreeMap<String, BTreeSet<TopicPartition>> =
        sorted.iter().map(|m| (m.id.to_string(), BTreeSet::new())).collect();
    let subscribed: BTreeSet<&String> = sorted.iter().flat_map(|m| m.topics.iter()).collect();
    let partitions: Vec<TopicPartition> = subscribed
        .iter()
        .filter_map(|topic| partition_counts.get(*topic).map(|count| (topic, *count)))
        .flat_map(|(topic, count)| (0..count).map(move |p| ((*topic).clone(), p)))
        .collect();
    match strategy {
        Strategy::Range => {
            for topic in &subscribed {
                let Some(&count) = partition_counts.get(*topic) else { continue };
                let eligible: Vec<_> = sorted.iter().filter(|m| m.topics.contains(*topic)).collect();
                let (per_member, extra) = (count / eligible.len() as u32, count % eligible.len() as u32);
                let mut next = 0;
                for (member_idx, member) in eligible.iter().enumerate() {
                    let n = per_member + u32::from((member_idx as u32) < extra);
                    let target = targets.get_mut(member.id).expect("listed");
                    target.extend((next..next + n).map(|p| ((*topic).clone(), p)));
                    next += n;
                }
            }
        }
        Strategy::RoundRobin => {
            let mut cursor = 0;
            for partition in partitions {
                for step in 0..sorted.len() {
                    let member = sorted[(cursor + step) % sorted.len()];
                    if member.topics.contains(&partition.0) {
                        targets.get_mut(member.id).expect("listed").insert(partition.clone());
                        cursor = (cursor + step + 1) % sorted.len();
                        break;
                    }
                }
            }
        }
        Strategy::CooperativeSticky => {
            if sorted.is_empty() {
                return targets;
            }
            let all: BTreeSet<&TopicPartition> = partitions.iter().collect();
            let base = partitions.len() / sorted.len();
            let mut extras_left = partitions.len() % sorted.len();
            // Members owning the most keep first, so that the extra slots go to those that already hold them.
            let mut by_owned = sorted.clone();
            by_owned.sort_by(|a, b| b.owned.len().cmp(&a.owned.len()).then(a.id.cmp(b.id)));
            let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
            for member in by_owned {
                let cap = base + usize::from(extras_left > 0);
                let keep: Vec<&TopicPartition> = member
                    .owned
                    .iter()
                    // A partition two members claim (a stale report) is kept by the first only.
                    .filter(|tp| all.contains(tp) && member.topics.contains(&tp.0) && !taken.contains(*tp))
                    .take(cap)
                    .collect();
                if keep.len() == base + 1 {
                    extras_left -= 1;
                }
                for tp in keep {
                    taken.insert(tp.clone());
                    targets.get_mut(member.id).expect("listed").insert(tp.clone());
                }
            }
            for partition in partitions.iter().filter(|tp| !taken.contains(*tp)) {
                let chosen = sorted
                    .iter()
                    .filter(|m| m.topics.contains(&partition.0))
                    .min_by_key(|m| (targets[m.id].len(), m.id))
                    .map(|m| m.id);
                if let Some(id) = chosen {
                    targets.get_mut(id).expect("listed").insert(partition.clone());
                }
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> BTreeMap<String, u32> {
        [("t".to_string(), 6)].into()
    }

    fn run(strategy: Strategy, owned: &[(&str, Vec<u32>)]) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let topics: BTreeSet<String> = ["t".to_string()].into();
        let owned_sets: Vec<(String, BTreeSet<TopicPartition>)> =
            owned.iter().map(|(id, ps)| (id.to_string(), ps.iter().map(|p| ("t".to_string(), *p)).collect())).collect();
        let specs: Vec<MemberSpec<'_>> =
            owned_sets.iter().map(|(id, owned)| MemberSpec { id, topics: &topics, owned }).collect();
        assign(strategy, &specs, &counts())
    }

    fn assert_partitioned(targets: &BTreeMap<String, BTreeSet<TopicPartition>>) {
        let mut seen = BTreeSet::new();
        for set in targets.values() {
            for tp in set {
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        assert_eq!(seen.len(), 6, "every partition assigned");
        let sizes: Vec<usize> = targets.values().map(BTreeSet::len).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "balanced: {sizes:?}");
    }

    #[test]
    fn every_strategy_partitions_and_balances() {
        for strategy in [Strategy::Range, Strategy::RoundRobin, Strategy::CooperativeSticky] {
            assert_partitioned(&run(strategy, &[("a", vec![]), ("b", vec![]), ("c", vec![])]));
            assert_partitioned(&run(strategy, &[("a", vec![]), ("b", vec![]), ("c", vec![]), ("d", vec![])]));
        }
        let range = run(Strategy::Range, &[("a", vec![]), ("b", vec![])]);
        assert_eq!(range["a"].iter().map(|tp| tp.1).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn sticky_moves_only_what_it_must() {
        let before = [("a", vec![0, 1]), ("b", vec![2, 3]), ("c", vec![4, 5]), ("d", vec![])];
        let after = run(Strategy::CooperativeSticky, &before);
        assert_partitioned(&after);
        let moved: usize = before
            .iter()
            .map(|(id, owned)| owned.iter().filter(|p| !after[*id].contains(&("t".to_string(), **p))).count())
            .sum();
        assert_eq!(moved, 1, "one partition moves to the new member: {after:?}");
        assert_eq!(after["d"].len(), 1);
    }

    proptest::proptest! {
        /// Any members, any owned sets (even stale or overlapping ones), any of the three strategies: every
        /// partition of the topic goes to exactly one member, balanced within one.
        #[test]
        fn any_group_is_partitioned_and_balanced(
            strategy in 0..3u8,
            owned in proptest::collection::vec(proptest::collection::vec(0..8u32, 0..4), 1..6),
        ) {
            let strategy = [Strategy::Range, Strategy::RoundRobin, Strategy::CooperativeSticky][strategy as usize];
            let ids: Vec<String> = (0..owned.len()).map(|i| format!("m{i}")).collect();
            let members: Vec<(&str, Vec<u32>)> = ids.iter().map(String::as_str).zip(owned).collect();
            assert_partitioned(&run(strategy, &members));
        }
    }
}
