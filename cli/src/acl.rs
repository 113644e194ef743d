//! `oxbow acl add|remove|list`: access control entries, checked by brokers started with
//! `security.authorization = "acl"`.

use clap::{Args, Subcommand, ValueEnum};
use oxbow::client::{Admin, ClientConfig};
use oxbow::protocol::api::acls::{AclBinding, Operation, PatternType, Permission, ResourceType, CLUSTER_NAME};

#[derive(Subcommand)]
pub enum AclCommand {
    /// Allow (or deny) a principal an operation on a topic, a group or the cluster.
    Add(AclArgs),
    /// Remove an entry (the same arguments as `add`).
    Remove(AclArgs),
    /// List entries, or one principal's.
    List {
        #[arg(long)]
        principal: Option<String>,
    },
}

#[derive(Args)]
pub struct AclArgs {
    /// `User:<name>`, or `User:*` for every authenticated user.
    #[arg(long)]
    principal: String,
    #[arg(long, value_enum)]
    operation: OperationArg,
    /// A topic name (with --prefixed: a prefix); `*` for every topic.
    #[arg(long, conflicts_with_all = ["group", "cluster"])]
    topic: Option<String>,
    /// A group id (with --prefixed: a prefix); `*` for every group.
    #[arg(long, conflicts_with = "cluster")]
    group: Option<String>,
    /// The cluster itself (users, ACLs, creating topics).
    #[arg(long)]
    cluster: bool,
    /// Match every name that starts with the given one.
    #[arg(long)]
    prefixed: bool,
    /// Deny instead of allow (a deny wins over any allow).
    #[arg(long)]
    deny: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OperationArg {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
}

impl AclArgs {
    fn binding(self) -> anyhow::Result<AclBinding> {
        let (resource_type, resource_name) = match (self.topic, self.group, self.cluster) {
            (Some(topic), None, false) => (ResourceType::Topic, topic),
            (None, Some(group), false) => (ResourceType::Group, group),
            (None, None, true) => (ResourceType::Cluster, CLUSTER_NAME.to_string()),
            _ => anyhow::bail!("name exactly one of --topic, --group or --cluster"),
        };
        let operation = match self.operation {
            OperationArg::All => Operation::All,
            OperationArg::Read => Operation::Read,
            OperationArg::Write => Operation::Write,
            OperationArg::Create => Operation::Create,
            OperationArg::Delete => Operation::Delete,
            OperationArg::Alter => Operation::Alter,
            OperationArg::Describe => Operation::Describe,
        };
        Ok(AclBinding {
            principal: self.principal,
            resource_type,
            pattern_type: if self.prefixed { PatternType::Prefixed } else { PatternType::Literal },
            resource_name,
            operation,
            permission: if self.deny { Permission::Deny } else { Permission::Allow },
        })
    }
}

pub async fn run(client: ClientConfig, command: AclCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(client).await?;
    match command {
        AclCommand::Add(args) => {
            let binding = args.binding()?;
            admin.create_acls(vec![binding.clone()]).await?;
            println!("Added: {}", describe(&binding));
        }
        AclCommand::Remove(args) => {
            let binding = args.binding()?;
            admin.delete_acls(vec![binding.clone()]).await?;
            println!("Removed: {}", describe(&binding));
        }
        AclCommand::List { principal } => {
            for binding in admin.list_acls(principal).await? {
                println!("{}", describe(&binding));
            }
        }
    }
    Ok(())
}

fn describe(binding: &AclBinding) -> String {
    format!(
        "{} {:?} {:?} on {:?} {} '{}'",
        binding.principal,
        binding.permission,
        binding.operation,
        binding.resource_type,
        if binding.pattern_type == PatternType::Prefixed { "prefixed" } else { "literal" },
        binding.resource_name
    )
    .to_lowercase()
    .replacen("user:", "User:", 1)
}
