//! Authorization: whether a principal may perform an operation on a resource, given the ACLs in the
//! metadata. Pure: no I/O, property-tested below. Deny wins over allow; Read, Write, Delete and Alter imply
//! Describe; super users and brokers may do everything; with no matching allow the answer is no.

use oxbow::protocol::api::acls::{AclBinding, Operation, PatternType, Permission, ResourceType};

use super::Principal;

/// Whether `principal` may do `operation` on the resource. `super_user` short-cuts everything.
pub fn allowed(
    acls: &[AclBinding],
    principal: &Principal,
    super_user: bool,
    resource_type: ResourceType,
    name: &str,
    operation: Operation,
) -> bool {
    if super_user || matches!(principal, Principal::Broker(_)) {
        return true;
    }
    let principal_text = principal.to_string();
    let mut allow = false;
    for acl in acls {
        let applies = acl.resource_type == resource_type
            && principal_matches(&acl.principal, &principal_text, principal)
            && name_matches(acl, name)
            && operation_matches(acl.operation, operation, acl.permission);
        if !applies {
            continue;
        }
        match acl.permission {
            Permission::Deny => return false,
            Permission::Allow => allow = true,
        }
    }
    allow
}

/// Checks a binding before it is stored.
pub fn validate(acl: &AclBinding) -> Result<(), String> {
    let Some(name) = acl.principal.strip_prefix("User:") else {
        return Err(format!("principal '{}' must be User:<name> or User:*", acl.principal));
    };
    if name != "*" {
        oxbow::auth::scram::validate_user_name(name).map_err(|error| error.to_string())?;
    }
    if acl.resource_name.is_empty() || acl.resource_name.len() > 249 {
        return Err("resource name must be 1-249 characters".into());
    }
    if acl.resource_type == ResourceType::Cluster && acl.resource_name != oxbow::protocol::api::acls::CLUSTER_NAME {
        return Err(format!("the cluster resource is named '{}'", oxbow::protocol::api::acls::CLUSTER_NAME));
    }
    Ok(())
}

fn principal_matches(acl_principal: &str, principal_text: &str, principal: &Principal) -> bool {
    acl_principal == principal_text || (acl_principal == "User:*" && matches!(principal, Principal::User(_)))
}

fn name_matches(acl: &AclBinding, name: &str) -> bool {
    match acl.pattern_type {
        PatternType::Literal => acl.resource_name == "*" || acl.resource_name == name,
        PatternType::Prefixed => name.starts_with(&acl.resource_name),
    }
}

/// An allow for Read, Write, Delete or Alter also allows Describe; a deny denies only what it names (and a
/// deny of All denies everything).
fn operation_matches(acl_operation: Operation, wanted: Operation, permission: Permission) -> bool {
    if acl_operation == Operation::All || acl_operation == wanted {
        return true;
    }
    permission == Permission::Allow
        && wanted == Operation::Describe
        && matches!(acl_operation, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn acl(
        principal: &str,
        pattern: PatternType,
        name: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type: ResourceType::Topic,
            pattern_type: pattern,
            resource_name: name.into(),
            operation,
            permission,
        }
    }

    fn alice() -> Principal {
        Principal::User("alice".into())
    }

    #[test]
    fn literal_prefixed_and_wildcard_names_match_as_documented() {
        let acls = vec![
            acl("User:alice", PatternType::Literal, "bookings", Operation::Write, Permission::Allow),
            acl("User:alice", PatternType::Prefixed, "lab-", Operation::Read, Permission::Allow),
            acl("User:*", PatternType::Literal, "*", Operation::Describe, Permission::Allow),
        ];
        let check = |name, operation| allowed(&acls, &alice(), false, ResourceType::Topic, name, operation);
        assert!(check("bookings", Operation::Write));
        assert!(!check("bookings", Operation::Read));
        assert!(!check("bookings2", Operation::Write));
        assert!(check("lab-assignments", Operation::Read));
        assert!(check("lab-assignments", Operation::Describe), "Read implies Describe");
        assert!(check("anything", Operation::Describe), "User:* with *");
        assert!(!check("anything", Operation::Delete));
        assert!(!allowed(&acls, &alice(), false, ResourceType::Group, "bookings", Operation::Write));
        assert!(!allowed(&acls, &Principal::Anonymous, false, ResourceType::Topic, "x", Operation::Describe));
        assert!(allowed(&[], &Principal::Broker(1), false, ResourceType::Cluster, "kafka-cluster", Operation::Alter));
        assert!(allowed(&[], &alice(), true, ResourceType::Topic, "x", Operation::Delete));
    }

    #[test]
    fn bindings_are_validated() {
        let good = acl("User:alice", PatternType::Literal, "t", Operation::Read, Permission::Allow);
        assert!(validate(&good).is_ok());
        for bad in [
            AclBinding { principal: "alice".into(), ..good.clone() },
            AclBinding { principal: "User:a,b".into(), ..good.clone() },
            AclBinding { resource_name: String::new(), ..good.clone() },
            AclBinding { resource_type: ResourceType::Cluster, ..good.clone() },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?} accepted");
        }
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            Just(Operation::All),
            Just(Operation::Read),
            Just(Operation::Write),
            Just(Operation::Create),
            Just(Operation::Delete),
            Just(Operation::Alter),
            Just(Operation::Describe),
        ]
    }

    fn binding() -> impl Strategy<Value = AclBinding> {
        (
            prop_oneof![Just("User:alice"), Just("User:bob"), Just("User:*")],
            prop_oneof![Just(PatternType::Literal), Just(PatternType::Prefixed)],
            prop_oneof![Just("a"), Just("ab"), Just("abc"), Just("*")],
            operation(),
            prop_oneof![Just(Permission::Allow), Just(Permission::Deny)],
        )
            .prop_map(|(principal, pattern, name, operation, permission)| {
                acl(principal, pattern, name, operation, permission)
            })
    }

    proptest! {
        /// Deny wins: a matching deny refuses whatever allows there are; without a matching allow the
        /// answer is no; and adding an allow never takes a permission away.
        #[test]
        fn deny_wins_and_nothing_is_allowed_by_default(
            acls in proptest::collection::vec(binding(), 0..8),
            extra in binding(),
            name in prop_oneof![Just("a"), Just("ab"), Just("abc"), Just("b")],
            wanted in operation(),
        ) {
            let answer = allowed(&acls, &alice(), false, ResourceType::Topic, name, wanted);
            let applies = |acl: &AclBinding| {
                principal_matches(&acl.principal, "User:alice", &alice())
                    && name_matches(acl, name)
                    && operation_matches(acl.operation, wanted, acl.permission)
            };
            let any_deny = acls.iter().any(|acl| acl.permission == Permission::Deny && applies(acl));
            let any_allow = acls.iter().any(|acl| acl.permission == Permission::Allow && applies(acl));
            prop_assert_eq!(answer, any_allow && !any_deny);
            if extra.permission == Permission::Allow {
                let mut more = acls.clone();
                more.push(extra);
                prop_assert!(allowed(&more, &alice(), false, ResourceType::Topic, name, wanted) || !answer);
            }
        }
    }
}
