//! Which store `hcc` opens: the Redis URLs, from an argument only without a password, from an
//! environment variable with or without.

use hyper_client_cache::BoxError;

use crate::Target;

/// The Redis URLs to connect to, and whether they are a cluster's: from an argument only
/// without a password (arguments are in `/proc/PID/cmdline` for every user), from an
/// environment variable with or without.
pub(crate) fn redis_nodes(target: &Target) -> Result<(Vec<String>, bool), BoxError> {
    let refuse = |flag: &str| -> BoxError {
        format!(
            "the Redis URL given as an argument carries a password, which every user of this \
             machine can read (ps, /proc/PID/cmdline): put the URL in an environment variable \
             and name it with {flag} (the password is not repeated here; change it if the \
             machine is shared)"
        )
        .into()
    };
    if let Some(url) = &target.redis {
        if password(url).is_some() {
            return Err(refuse("--redis-env"));
        }
        Ok((vec![url.clone()], false))
    } else if let Some(nodes) = &target.redis_cluster {
        if nodes.iter().any(|url| password(url).is_some()) {
            return Err(refuse("--redis-cluster-env"));
        }
        Ok((nodes.clone(), true))
    } else if let Some(name) = &target.redis_env {
        Ok((
            vec![from_env(name, "the Redis URL")?.trim().to_owned()],
            false,
        ))
    } else if let Some(name) = &target.redis_cluster_env {
        let nodes = from_env(name, "the Redis Cluster's node URLs, comma-separated")?;
        let nodes: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            return Err(format!("environment variable `{name}` names no node").into());
        }
        Ok((nodes, true))
    } else {
        Err("give --dir, --redis, --redis-cluster, --redis-env or --redis-cluster-env".into())
    }
}

fn from_env(name: &str, what: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|e| match e {
        std::env::VarError::NotPresent => {
            format!("environment variable `{name}` is not set: it should hold {what}").into()
        }
        std::env::VarError::NotUnicode(_) => {
            format!("environment variable `{name}` is not valid Unicode").into()
        }
    })
}

/// The password of a `redis://[user][:password]@host...` URL, when it has one.
pub(crate) fn password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}
