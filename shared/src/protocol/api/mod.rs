//! One module per API: its request and response bodies. `ApiKey` is the table of API keys and versions.

pub mod acls;
pub mod alter_configs;
pub mod api_versions;
pub mod authenticate;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_groups;
pub mod describe_topics;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod internal;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;
pub mod users;

macro_rules! api_keys {
    ($( $name:ident = $key:expr, versions $min:expr => $max:expr; )*) => {
        /// The API keys this build knows, with the versions it supports. Keys are never reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ApiKey { $( $name, )* }

        impl ApiKey {
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$name,)*];

            pub fn key(self) -> u16 {
                match self { $(ApiKey::$name => $key,)* }
            }

            pub fn from_key(key: u16) -> Option<ApiKey> {
                match key { $($key => Some(ApiKey::$name),)* _ => None }
            }

            pub fn min_version(self) -> u16 {
                match self { $(ApiKey::$name => $min,)* }
            }

            pub fn max_version(self) -> u16 {
                match self { $(ApiKey::$name => $max,)* }
            }

            pub fn name(self) -> &'static str {
                match self { $(ApiKey::$name => stringify!($name),)* }
            }
        }
    };
}

api_keys! {
    ApiVersions = 0, versions 0 => 0;
    Metadata = 1, versions 0 => 0;
    CreateTopics = 2, versions 0 => 0;
    DeleteTopics = 3, versions 0 => 0;
    DescribeTopics = 4, versions 0 => 0;
    Produce = 5, versions 0 => 0;
    Fetch = 6, versions 0 => 0;
    ListOffsets = 7, versions 0 => 0;
    Authenticate = 8, versions 0 => 0;
    FindCoordinator = 10, versions 0 => 0;
    JoinGroup = 11, versions 0 => 0;
    SyncGroup = 12, versions 0 => 0;
    Heartbeat = 13, versions 0 => 0;
    LeaveGroup = 14, versions 0 => 0;
    OffsetCommit = 15, versions 0 => 0;
    OffsetFetch = 16, versions 0 => 0;
    ListGroups = 17, versions 0 => 0;
    DescribeGroups = 18, versions 0 => 0;
    AlterConfigs = 20, versions 0 => 0;
    InitProducerId = 21, versions 0 => 0;
    DescribeCluster = 22, versions 0 => 0;
    AlterUsers = 23, versions 0 => 0;
    DescribeUsers = 24, versions 0 => 0;
    CreateAcls = 25, versions 0 => 0;
    DeleteAcls = 26, versions 0 => 0;
    DescribeAcls = 27, versions 0 => 0;
    Raft = 30, versions 0 => 0;
    Controller = 31, versions 0 => 0;
}

/// Ties a request body to its API key and response body.
pub trait Request: serde::Serialize {
    const API_KEY: ApiKey;
    /// The response body; Fetch's borrows from the response frame.
    type Response;
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::{de::DeserializeOwned, Serialize};
    use std::fmt::Debug;

    /// Encodes, decodes and compares; then checks every truncation fails to decode.
    pub fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
        let bytes = rmp_serde::to_vec_named(value).unwrap();
        let decoded: T = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(&decoded, value);
        for len in 0..bytes.len() {
            assert!(rmp_serde::from_slice::<T>(&bytes[..len]).is_err(), "truncation at {len} decoded");
        }
    }
}

#[cfg(test)]
mod decode_tests;
