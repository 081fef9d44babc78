//! `RouteGateway` (dmsg port 136): route-ID reservations and rules, for route-setup
//! (ROUTING.md §4–§5).

use skywire_proto::skywire::visor::v1 as pb;
use tonic::{Code, Request, Response, Status};

use super::{gateway_status, invalid};
use crate::node::Visor;
use crate::packet::RouteId;
use crate::router::{Rule, RuleKind, TableError, rule::MAX_RULE_LEN, table::MAX_RESERVE_AT_ONCE};

/// Rules one call may install.
pub const MAX_RULES_PER_CALL: usize = 64;

/// The service.
#[derive(Clone, Debug)]
pub struct RouteGatewayService {
    visor: Visor,
}

impl RouteGatewayService {
    /// The gateway of `visor`.
    pub fn new(visor: Visor) -> Self {
        Self { visor }
    }

    /// Decodes the rules of a request, each checked, or says which one is wrong.
    fn decode(rules: &[Vec<u8>]) -> Result<Vec<Rule>, Status> {
        if rules.is_empty() || rules.len() > MAX_RULES_PER_CALL {
            return Err(invalid(format!(
                "send 1 to {MAX_RULES_PER_CALL} rules, not {}",
                rules.len()
            )));
        }
        rules
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                if bytes.len() > MAX_RULE_LEN {
                    return Err(invalid(format!("rules[{i}] is longer than a rule")));
                }
                Rule::decode(bytes).map_err(|error| invalid(format!("rules[{i}]: {error}")))
            })
            .collect()
    }

    /// Installs every rule or none: on a failure the ones this call installed are removed.
    fn install_all(&self, rules: &[Rule]) -> Result<(), Status> {
        for (i, rule) in rules.iter().enumerate() {
            if let Err(error) = self.visor.install(*rule) {
                for installed in &rules[..i] {
                    self.visor.remove_rule(installed.key);
                }
                return Err(table_status(error));
            }
        }
        Ok(())
    }
}

fn table_status(error: TableError) -> Status {
    match error {
        TableError::BadCount(_) => invalid(error.to_string()),
        TableError::Full(_) => {
            gateway_status(Code::ResourceExhausted, error.to_string(), "table_full")
        }
        TableError::NotReserved(_) => gateway_status(
            Code::FailedPrecondition,
            format!("{error}: reserve it first (ReserveIds), and install within 30 s"),
            "not_reserved",
        ),
    }
}

#[tonic::async_trait]
impl pb::route_gateway_server::RouteGateway for RouteGatewayService {
    async fn reserve_ids(
        &self,
        request: Request<pb::ReserveIdsRequest>,
    ) -> Result<Response<pb::ReserveIdsResponse>, Status> {
        let n = request.into_inner().n as usize;
        if n == 0 || n > MAX_RESERVE_AT_ONCE {
            return Err(invalid(format!(
                "n must be 1 to {MAX_RESERVE_AT_ONCE}, not {n}"
            )));
        }
        let ids = self.visor.reserve(n).map_err(table_status)?;
        Ok(Response::new(pb::ReserveIdsResponse {
            ids: ids.iter().map(|id| id.get()).collect(),
        }))
    }

    async fn add_intermediary_rules(
        &self,
        request: Request<pb::AddRulesRequest>,
    ) -> Result<Response<pb::AddRulesResponse>, Status> {
        let rules = Self::decode(&request.into_inner().rules)?;
        if let Some(i) = rules
            .iter()
            .position(|rule| !matches!(rule.kind, RuleKind::Intermediary(_)))
        {
            return Err(invalid(format!("rules[{i}] is not an INTERMEDIARY rule")));
        }
        self.install_all(&rules)?;
        Ok(Response::new(pb::AddRulesResponse {}))
    }

    async fn add_edge_rules(
        &self,
        request: Request<pb::AddRulesRequest>,
    ) -> Result<Response<pb::AddRulesResponse>, Status> {
        let rules = Self::decode(&request.into_inner().rules)?;
        let edge = matches!(
            rules.as_slice(),
            [a, b] if matches!((&a.kind, &b.kind),
                (RuleKind::Consume(_), RuleKind::Forward { .. })
                | (RuleKind::Forward { .. }, RuleKind::Consume(_)))
        );
        if !edge {
            return Err(invalid(
                "edge rules are exactly two: the CONSUME rule of the forward route and the \
                 FORWARD rule of the reverse route",
            ));
        }
        self.install_all(&rules)?;
        Ok(Response::new(pb::AddRulesResponse {}))
    }

    async fn release_ids(
        &self,
        request: Request<pb::ReleaseIdsRequest>,
    ) -> Result<Response<pb::ReleaseIdsResponse>, Status> {
        let ids = request.into_inner().ids;
        if ids.len() > MAX_RULES_PER_CALL {
            return Err(invalid(format!(
                "release at most {MAX_RULES_PER_CALL} ids at once, not {}",
                ids.len()
            )));
        }
        for id in ids.into_iter().filter_map(RouteId::new) {
            self.visor.remove_rule(id);
        }
        Ok(Response::new(pb::ReleaseIdsResponse {}))
    }
}
