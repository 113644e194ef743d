//! What the broker says about its metadata quorum. openraft reports every refused connection and every
//! missed heartbeat (a peer not started yet, a broker stopped on purpose) as an ERROR or WARN line, which
//! buries real problems and alarms a new user at the first start; its own logging is off by default
//! (`RUST_LOG=openraft=warn` brings it back). Instead this watcher turns the quorum's metrics into a few
//! lines an operator can act on: who leads, a voter that stayed behind for longer than a grace period (and
//! when it is back), and a quorum without a leader for that long. Pure: the caller feeds it observations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One look at the quorum, as this broker sees it.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub leader: Option<u64>,
    pub term: u64,
    /// On the leader: the last log index each voter is known to hold (`None`: nothing confirmed yet).
    pub matched: BTreeMap<u64, Option<u64>>,
    /// The leader's last log index.
    pub last_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumEvent {
    Leader { leader: u64, term: u64 },
    NoLeader { for_: Duration },
    VoterBehind { voter: u64, for_: Duration },
    VoterBack { voter: u64 },
}

#[derive(Debug)]
pub struct QuorumWatch {
    grace: Duration,
    leader: Option<u64>,
    leaderless_since: Option<Instant>,
    leaderless_reported: bool,
    behind_since: BTreeMap<u64, Instant>,
    behind_reported: BTreeSet<u64>,
}

impl QuorumWatch {
    /// `grace`: how long a voter may stay behind, or the quorum leaderless, before it is reported.
    pub fn new(grace: Duration) -> QuorumWatch {
        QuorumWatch {
            grace,
            leader: None,
            leaderless_since: None,
            leaderless_reported: false,
            behind_since: BTreeMap::new(),
            behind_reported: BTreeSet::new(),
        }
    }

    pub fn observe(&mut self, now: Instant, seen: &Observation) -> Vec<QuorumEvent> {
        let mut events = Vec::new();
        match seen.leader {
            Some(leader) => {
                if self.leader != Some(leader) {
                    events.push(QuorumEvent::Leader { leader, term: seen.term });
                }
                self.leaderless_since = None;
                self.leaderless_reported = false;
            }
            None => {
                let since = *self.leaderless_since.get_or_insert(now);
                if !self.leaderless_reported && now.duration_since(since) >= self.grace {
                    events.push(QuorumEvent::NoLeader { for_: now.duration_since(since) });
                    self.leaderless_reported = true;
                }
            }
        }
        self.leader = seen.leader;
        // A voter is behind while it lacks the leader's last entry; short gaps are replication at work.
        let behind: BTreeSet<u64> = seen
            .matched
            .iter()
            .filter(|(_, matched)| matched.is_none_or(|index| index < seen.last_index))
            .map(|(voter, _)| *voter)
            .collect();
        self.behind_since.retain(|voter, _| behind.contains(voter));
        for voter in &behind {
            let since = *self.behind_since.entry(*voter).or_insert(now);
            if !self.behind_reported.contains(voter) && now.duration_since(since) >= self.grace {
                events.push(QuorumEvent::VoterBehind { voter: *voter, for_: now.duration_since(since) });
                self.behind_reported.insert(*voter);
            }
        }
        let back: Vec<u64> = self.behind_reported.iter().filter(|voter| !behind.contains(voter)).copied().collect();
        for voter in back {
            self.behind_reported.remove(&voter);
            // Only the leader knows; a voter that stopped being reported because this broker lost the
            // leadership is not "back".
            if !seen.matched.is_empty() {
                events.push(QuorumEvent::VoterBack { voter });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn leader_view(last_index: u64, matched: &[(u64, Option<u64>)]) -> Observation {
        Observation { leader: Some(1), term: 3, matched: matched.iter().copied().collect(), last_index }
    }

    #[test]
    fn a_first_election_and_brief_gaps_say_only_who_leads() {
        let start = Instant::now();
        let mut watch = QuorumWatch::new(Duration::from_secs(5));
        // Peers not up yet for two seconds: no leader, then one.
        assert!(watch.observe(start, &Observation::default()).is_empty());
        assert!(watch.observe(at(start, 2000), &Observation::default()).is_empty());
        let events = watch.observe(at(start, 2100), &leader_view(5, &[(1, Some(5)), (2, None), (3, Some(4))]));
        assert_eq!(events, [QuorumEvent::Leader { leader: 1, term: 3 }]);
        // Followers catch up within the grace period: nothing to say.
        assert!(watch
            .observe(at(start, 4000), &leader_view(9, &[(1, Some(9)), (2, Some(9)), (3, Some(9))]))
            .is_empty());
    }

    #[test]
    fn a_voter_behind_past_the_grace_is_reported_once_then_back() {
        let start = Instant::now();
        let mut watch = QuorumWatch::new(Duration::from_secs(5));
        watch.observe(start, &leader_view(5, &[(1, Some(5)), (2, Some(5)), (3, Some(5))]));
        assert!(watch
            .observe(at(start, 1000), &leader_view(8, &[(1, Some(8)), (2, Some(5)), (3, Some(8))]))
            .is_empty());
        let events = watch.observe(at(start, 6000), &leader_view(9, &[(1, Some(9)), (2, Some(5)), (3, Some(9))]));
        assert_eq!(events, [QuorumEvent::VoterBehind { voter: 2, for_: Duration::from_secs(5) }]);
        assert!(watch
            .observe(at(start, 9000), &leader_view(9, &[(1, Some(9)), (2, Some(5)), (3, Some(9))]))
            .is_empty());
        let events = watch.observe(at(start, 9500), &leader_view(9, &[(1, Some(9)), (2, Some(9)), (3, Some(9))]));
        assert_eq!(events, [QuorumEvent::VoterBack { voter: 2 }]);
    }

    #[test]
    fn a_quorum_without_a_leader_past_the_grace_is_reported_once() {
        let start = Instant::now();
        let mut watch = QuorumWatch::new(Duration::from_secs(5));
        watch.observe(start, &leader_view(5, &[(1, Some(5))]));
        assert!(watch.observe(at(start, 100), &Observation::default()).is_empty());
        let events = watch.observe(at(start, 5100), &Observation::default());
        assert_eq!(events, [QuorumEvent::NoLeader { for_: Duration::from_secs(5) }]);
        assert!(watch.observe(at(start, 8000), &Observation::default()).is_empty());
        let events = watch.observe(at(start, 8100), &Observation { leader: Some(2), term: 4, ..Default::default() });
        assert_eq!(events, [QuorumEvent::Leader { leader: 2, term: 4 }]);
    }
}
