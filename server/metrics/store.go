package metrics

import (
	"context"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tendrildeploy/tendril/server/store"
)

// TimeStore returns st timing each of its operations into
// tendril_store_query_duration_seconds, by method name. Unwrap gives st
// back, for what asks which store it is (SQLite or shared, snapshots).
func (m *Metrics) TimeStore(st store.Store) store.Store {
	t := &timedStore{Store: st, ops: make(map[string]prometheus.Observer)}
	// The series are made once, so that an operation costs a map read
	// and an observation, no label hashing.
	for _, op := range storeOps {
		t.ops[op] = m.StoreDuration.WithLabelValues(op)
	}
	return t
}

// timedStore is a store.Store timing its operations. Close is passed on
// untimed. Generated from store.Store's method set; a method added there
// is passed on untimed (by the embedded Store) until added here.
type timedStore struct {
	store.Store
	ops map[string]prometheus.Observer // read only after TimeStore
}

// Unwrap returns the store being timed.
func (s *timedStore) Unwrap() store.Store { return s.Store }

func (s *timedStore) observe(op string, start time.Time) {
	s.ops[op].Observe(time.Since(start).Seconds())
}

// APIKeyByHash times the store's APIKeyByHash.
func (s *timedStore) APIKeyByHash(ctx context.Context, a1 string) (store.APIKey, error) {
	defer s.observe("APIKeyByHash", time.Now())
	return s.Store.APIKeyByHash(ctx, a1)
}

// AcceptNodeCalls times the store's AcceptNodeCalls.
func (s *timedStore) AcceptNodeCalls(ctx context.Context, a1 string, a2 time.Time) ([]store.NodeCall, error) {
	defer s.observe("AcceptNodeCalls", time.Now())
	return s.Store.AcceptNodeCalls(ctx, a1, a2)
}

// AddAgentPackage times the store's AddAgentPackage.
func (s *timedStore) AddAgentPackage(ctx context.Context, a1 store.AgentPackage) error {
	defer s.observe("AddAgentPackage", time.Now())
	return s.Store.AddAgentPackage(ctx, a1)
}

// AddBundle times the store's AddBundle.
func (s *timedStore) AddBundle(ctx context.Context, a1 store.Bundle) error {
	defer s.observe("AddBundle", time.Now())
	return s.Store.AddBundle(ctx, a1)
}

// AddListening times the store's AddListening.
func (s *timedStore) AddListening(ctx context.Context, a1 store.ListeningParams) (store.Agent, error) {
	defer s.observe("AddListening", time.Now())
	return s.Store.AddListening(ctx, a1)
}

// AgentByID times the store's AgentByID.
func (s *timedStore) AgentByID(ctx context.Context, a1 string) (store.Agent, error) {
	defer s.observe("AgentByID", time.Now())
	return s.Store.AgentByID(ctx, a1)
}

// AgentByName times the store's AgentByName.
func (s *timedStore) AgentByName(ctx context.Context, a1 string) (store.Agent, error) {
	defer s.observe("AgentByName", time.Now())
	return s.Store.AgentByName(ctx, a1)
}

// AgentByThumbprint times the store's AgentByThumbprint.
func (s *timedStore) AgentByThumbprint(ctx context.Context, a1 string) (store.Agent, error) {
	defer s.observe("AgentByThumbprint", time.Now())
	return s.Store.AgentByThumbprint(ctx, a1)
}

// AgentPackage times the store's AgentPackage.
func (s *timedStore) AgentPackage(ctx context.Context, a1 string, a2 string, a3 string) (store.AgentPackage, error) {
	defer s.observe("AgentPackage", time.Now())
	return s.Store.AgentPackage(ctx, a1, a2, a3)
}

// AgentPackages times the store's AgentPackages.
func (s *timedStore) AgentPackages(ctx context.Context) ([]store.AgentPackage, error) {
	defer s.observe("AgentPackages", time.Now())
	return s.Store.AgentPackages(ctx)
}

// AnswerNodeCall times the store's AnswerNodeCall.
func (s *timedStore) AnswerNodeCall(ctx context.Context, a1 store.NodeCall) error {
	defer s.observe("AnswerNodeCall", time.Now())
	return s.Store.AnswerNodeCall(ctx, a1)
}

// AppendTaskLogs times the store's AppendTaskLogs.
func (s *timedStore) AppendTaskLogs(ctx context.Context, a1 string, a2 []store.LogLine) ([]store.LogLine, error) {
	defer s.observe("AppendTaskLogs", time.Now())
	return s.Store.AppendTaskLogs(ctx, a1, a2)
}

// BlobInfo times the store's BlobInfo.
func (s *timedStore) BlobInfo(ctx context.Context, a1 string) (store.Blob, error) {
	defer s.observe("BlobInfo", time.Now())
	return s.Store.BlobInfo(ctx, a1)
}

// Bundle times the store's Bundle.
func (s *timedStore) Bundle(ctx context.Context, a1 string) (store.Bundle, error) {
	defer s.observe("Bundle", time.Now())
	return s.Store.Bundle(ctx, a1)
}

// Bundles times the store's Bundles.
func (s *timedStore) Bundles(ctx context.Context) ([]store.Bundle, error) {
	defer s.observe("Bundles", time.Now())
	return s.Store.Bundles(ctx)
}

// ClaimRollout times the store's ClaimRollout.
func (s *timedStore) ClaimRollout(ctx context.Context, a1 string, a2 string, a3 string) (bool, error) {
	defer s.observe("ClaimRollout", time.Now())
	return s.Store.ClaimRollout(ctx, a1, a2, a3)
}

// ClaimTask times the store's ClaimTask.
func (s *timedStore) ClaimTask(ctx context.Context, a1 string, a2 string, a3 string) (bool, error) {
	defer s.observe("ClaimTask", time.Now())
	return s.Store.ClaimTask(ctx, a1, a2, a3)
}

// CompleteIdempotencyKey times the store's CompleteIdempotencyKey.
func (s *timedStore) CompleteIdempotencyKey(ctx context.Context, a1 string, a2 string, a3 int, a4 []uint8, a5 time.Time) error {
	defer s.observe("CompleteIdempotencyKey", time.Now())
	return s.Store.CompleteIdempotencyKey(ctx, a1, a2, a3, a4, a5)
}

// CreateAPIKey times the store's CreateAPIKey.
func (s *timedStore) CreateAPIKey(ctx context.Context, a1 store.APIKey) error {
	defer s.observe("CreateAPIKey", time.Now())
	return s.Store.CreateAPIKey(ctx, a1)
}

// CreateNodeCall times the store's CreateNodeCall.
func (s *timedStore) CreateNodeCall(ctx context.Context, a1 store.NodeCall) error {
	defer s.observe("CreateNodeCall", time.Now())
	return s.Store.CreateNodeCall(ctx, a1)
}

// CreateRollout times the store's CreateRollout.
func (s *timedStore) CreateRollout(ctx context.Context, a1 store.Rollout, a2 []store.RolloutAgent) error {
	defer s.observe("CreateRollout", time.Now())
	return s.Store.CreateRollout(ctx, a1, a2)
}

// CreateTasks times the store's CreateTasks.
func (s *timedStore) CreateTasks(ctx context.Context, a1 []store.Task) error {
	defer s.observe("CreateTasks", time.Now())
	return s.Store.CreateTasks(ctx, a1)
}

// CreateToken times the store's CreateToken.
func (s *timedStore) CreateToken(ctx context.Context, a1 store.Token) error {
	defer s.observe("CreateToken", time.Now())
	return s.Store.CreateToken(ctx, a1)
}

// CreateUser times the store's CreateUser.
func (s *timedStore) CreateUser(ctx context.Context, a1 store.User) error {
	defer s.observe("CreateUser", time.Now())
	return s.Store.CreateUser(ctx, a1)
}

// DeleteAgent times the store's DeleteAgent.
func (s *timedStore) DeleteAgent(ctx context.Context, a1 string) error {
	defer s.observe("DeleteAgent", time.Now())
	return s.Store.DeleteAgent(ctx, a1)
}

// DeleteBlob times the store's DeleteBlob.
func (s *timedStore) DeleteBlob(ctx context.Context, a1 string) error {
	defer s.observe("DeleteBlob", time.Now())
	return s.Store.DeleteBlob(ctx, a1)
}

// DeleteBlobs times the store's DeleteBlobs.
func (s *timedStore) DeleteBlobs(ctx context.Context, a1 string, a2 time.Time) (int, error) {
	defer s.observe("DeleteBlobs", time.Now())
	return s.Store.DeleteBlobs(ctx, a1, a2)
}

// DeleteNodeCall times the store's DeleteNodeCall.
func (s *timedStore) DeleteNodeCall(ctx context.Context, a1 string) error {
	defer s.observe("DeleteNodeCall", time.Now())
	return s.Store.DeleteNodeCall(ctx, a1)
}

// DeleteToken times the store's DeleteToken.
func (s *timedStore) DeleteToken(ctx context.Context, a1 string) error {
	defer s.observe("DeleteToken", time.Now())
	return s.Store.DeleteToken(ctx, a1)
}

// DeleteUser times the store's DeleteUser.
func (s *timedStore) DeleteUser(ctx context.Context, a1 string) (store.User, error) {
	defer s.observe("DeleteUser", time.Now())
	return s.Store.DeleteUser(ctx, a1)
}

// DisconnectAgent times the store's DisconnectAgent.
func (s *timedStore) DisconnectAgent(ctx context.Context, a1 string, a2 string, a3 time.Time) error {
	defer s.observe("DisconnectAgent", time.Now())
	return s.Store.DisconnectAgent(ctx, a1, a2, a3)
}

// FinishRollout times the store's FinishRollout.
func (s *timedStore) FinishRollout(ctx context.Context, a1 string, a2 string, a3 string, a4 time.Time) error {
	defer s.observe("FinishRollout", time.Now())
	return s.Store.FinishRollout(ctx, a1, a2, a3, a4)
}

// HeartbeatNode times the store's HeartbeatNode.
func (s *timedStore) HeartbeatNode(ctx context.Context, a1 string) error {
	defer s.observe("HeartbeatNode", time.Now())
	return s.Store.HeartbeatNode(ctx, a1)
}

// IsRevoked times the store's IsRevoked.
func (s *timedStore) IsRevoked(ctx context.Context, a1 string) (bool, error) {
	defer s.observe("IsRevoked", time.Now())
	return s.Store.IsRevoked(ctx, a1)
}

// ListAPIKeys times the store's ListAPIKeys.
func (s *timedStore) ListAPIKeys(ctx context.Context) ([]store.APIKey, error) {
	defer s.observe("ListAPIKeys", time.Now())
	return s.Store.ListAPIKeys(ctx)
}

// ListListeningAgents times the store's ListListeningAgents.
func (s *timedStore) ListListeningAgents(ctx context.Context) ([]store.Agent, error) {
	defer s.observe("ListListeningAgents", time.Now())
	return s.Store.ListListeningAgents(ctx)
}

// ListAgents times the store's ListAgents.
func (s *timedStore) ListAgents(ctx context.Context) ([]store.Agent, error) {
	defer s.observe("ListAgents", time.Now())
	return s.Store.ListAgents(ctx)
}

// ListTasks times the store's ListTasks.
func (s *timedStore) ListTasks(ctx context.Context, a1 store.TaskFilter) ([]store.Task, error) {
	defer s.observe("ListTasks", time.Now())
	return s.Store.ListTasks(ctx, a1)
}

// ListTokens times the store's ListTokens.
func (s *timedStore) ListTokens(ctx context.Context) ([]store.Token, error) {
	defer s.observe("ListTokens", time.Now())
	return s.Store.ListTokens(ctx)
}

// ListUsers times the store's ListUsers.
func (s *timedStore) ListUsers(ctx context.Context) ([]store.User, error) {
	defer s.observe("ListUsers", time.Now())
	return s.Store.ListUsers(ctx)
}

// Listen times the store's Listen.
func (s *timedStore) Listen(ctx context.Context, a1 func(string), a2 func(error, time.Duration)) error {
	defer s.observe("Listen", time.Now())
	return s.Store.Listen(ctx, a1, a2)
}

// NodeCall times the store's NodeCall.
func (s *timedStore) NodeCall(ctx context.Context, a1 string) (store.NodeCall, error) {
	defer s.observe("NodeCall", time.Now())
	return s.Store.NodeCall(ctx, a1)
}

// Nodes times the store's Nodes.
func (s *timedStore) Nodes(ctx context.Context) ([]store.Node, error) {
	defer s.observe("Nodes", time.Now())
	return s.Store.Nodes(ctx)
}

// Notify times the store's Notify.
func (s *timedStore) Notify(ctx context.Context, a1 string) error {
	defer s.observe("Notify", time.Now())
	return s.Store.Notify(ctx, a1)
}

// Policy times the store's Policy.
func (s *timedStore) Policy(ctx context.Context) (store.Policy, error) {
	defer s.observe("Policy", time.Now())
	return s.Store.Policy(ctx)
}

// PromoteThumbprint times the store's PromoteThumbprint.
func (s *timedStore) PromoteThumbprint(ctx context.Context, a1 string) error {
	defer s.observe("PromoteThumbprint", time.Now())
	return s.Store.PromoteThumbprint(ctx, a1)
}

// PruneNodeCalls times the store's PruneNodeCalls.
func (s *timedStore) PruneNodeCalls(ctx context.Context, a1 time.Time) (int, error) {
	defer s.observe("PruneNodeCalls", time.Now())
	return s.Store.PruneNodeCalls(ctx, a1)
}

// PruneNodes times the store's PruneNodes.
func (s *timedStore) PruneNodes(ctx context.Context, a1 time.Duration) (int, error) {
	defer s.observe("PruneNodes", time.Now())
	return s.Store.PruneNodes(ctx, a1)
}

// PurgeIdempotencyKeys times the store's PurgeIdempotencyKeys.
func (s *timedStore) PurgeIdempotencyKeys(ctx context.Context, a1 time.Time) (int, error) {
	defer s.observe("PurgeIdempotencyKeys", time.Now())
	return s.Store.PurgeIdempotencyKeys(ctx, a1)
}

// PutBlob times the store's PutBlob.
func (s *timedStore) PutBlob(ctx context.Context, a1 store.Blob, a2 io.Reader) error {
	defer s.observe("PutBlob", time.Now())
	return s.Store.PutBlob(ctx, a1, a2)
}

// ReadBlob times the store's ReadBlob.
func (s *timedStore) ReadBlob(ctx context.Context, a1 string, a2 io.Writer) (store.Blob, error) {
	defer s.observe("ReadBlob", time.Now())
	return s.Store.ReadBlob(ctx, a1, a2)
}

// RecordConnection times the store's RecordConnection.
func (s *timedStore) RecordConnection(ctx context.Context, a1 store.Connection) error {
	defer s.observe("RecordConnection", time.Now())
	return s.Store.RecordConnection(ctx, a1)
}

// RecordHealth times the store's RecordHealth.
func (s *timedStore) RecordHealth(ctx context.Context, a1 []store.HealthResult) error {
	defer s.observe("RecordHealth", time.Now())
	return s.Store.RecordHealth(ctx, a1)
}

// Register times the store's Register.
func (s *timedStore) Register(ctx context.Context, a1 store.RegisterParams) (store.RegisterResult, error) {
	defer s.observe("Register", time.Now())
	return s.Store.Register(ctx, a1)
}

// RegisterNode times the store's RegisterNode.
func (s *timedStore) RegisterNode(ctx context.Context, a1 store.Node) (store.Node, error) {
	defer s.observe("RegisterNode", time.Now())
	return s.Store.RegisterNode(ctx, a1)
}

// ReleaseIdempotencyKey times the store's ReleaseIdempotencyKey.
func (s *timedStore) ReleaseIdempotencyKey(ctx context.Context, a1 string, a2 string, a3 string) error {
	defer s.observe("ReleaseIdempotencyKey", time.Now())
	return s.Store.ReleaseIdempotencyKey(ctx, a1, a2, a3)
}

// ReserveIdempotencyKey times the store's ReserveIdempotencyKey.
func (s *timedStore) ReserveIdempotencyKey(ctx context.Context, a1 store.IdempotencyKey) (store.IdempotencyKey, bool, error) {
	defer s.observe("ReserveIdempotencyKey", time.Now())
	return s.Store.ReserveIdempotencyKey(ctx, a1)
}

// RevocationReason times the store's RevocationReason.
func (s *timedStore) RevocationReason(ctx context.Context, a1 string) (string, error) {
	defer s.observe("RevocationReason", time.Now())
	return s.Store.RevocationReason(ctx, a1)
}

// RevokeAPIKey times the store's RevokeAPIKey.
func (s *timedStore) RevokeAPIKey(ctx context.Context, a1 string, a2 time.Time) (store.APIKey, error) {
	defer s.observe("RevokeAPIKey", time.Now())
	return s.Store.RevokeAPIKey(ctx, a1, a2)
}

// Rollout times the store's Rollout.
func (s *timedStore) Rollout(ctx context.Context, a1 string) (store.Rollout, error) {
	defer s.observe("Rollout", time.Now())
	return s.Store.Rollout(ctx, a1)
}

// RolloutAgent times the store's RolloutAgent.
func (s *timedStore) RolloutAgent(ctx context.Context, a1 string, a2 string) (store.RolloutAgent, error) {
	defer s.observe("RolloutAgent", time.Now())
	return s.Store.RolloutAgent(ctx, a1, a2)
}

// RolloutAgents times the store's RolloutAgents.
func (s *timedStore) RolloutAgents(ctx context.Context, a1 string) ([]store.RolloutAgent, error) {
	defer s.observe("RolloutAgents", time.Now())
	return s.Store.RolloutAgents(ctx, a1)
}

// Rollouts times the store's Rollouts.
func (s *timedStore) Rollouts(ctx context.Context, a1 bool, a2 int) ([]store.Rollout, error) {
	defer s.observe("Rollouts", time.Now())
	return s.Store.Rollouts(ctx, a1, a2)
}

// RunningRolloutAgents times the store's RunningRolloutAgents.
func (s *timedStore) RunningRolloutAgents(ctx context.Context, a1 string) ([]store.RolloutAgent, error) {
	defer s.observe("RunningRolloutAgents", time.Now())
	return s.Store.RunningRolloutAgents(ctx, a1)
}

// SetAgentAddress times the store's SetAgentAddress.
func (s *timedStore) SetAgentAddress(ctx context.Context, a1 string, a2 string) error {
	defer s.observe("SetAgentAddress", time.Now())
	return s.Store.SetAgentAddress(ctx, a1, a2)
}

// SetCalamariVersions times the store's SetCalamariVersions.
func (s *timedStore) SetCalamariVersions(ctx context.Context, a1 string, a2 []string) error {
	defer s.observe("SetCalamariVersions", time.Now())
	return s.Store.SetCalamariVersions(ctx, a1, a2)
}

// SetDialError times the store's SetDialError.
func (s *timedStore) SetDialError(ctx context.Context, a1 string, a2 string) error {
	defer s.observe("SetDialError", time.Now())
	return s.Store.SetDialError(ctx, a1, a2)
}

// SetNextThumbprint times the store's SetNextThumbprint.
func (s *timedStore) SetNextThumbprint(ctx context.Context, a1 string, a2 string) error {
	defer s.observe("SetNextThumbprint", time.Now())
	return s.Store.SetNextThumbprint(ctx, a1, a2)
}

// SetNodeDraining times the store's SetNodeDraining.
func (s *timedStore) SetNodeDraining(ctx context.Context, a1 string, a2 bool) error {
	defer s.observe("SetNodeDraining", time.Now())
	return s.Store.SetNodeDraining(ctx, a1, a2)
}

// SetPolicy times the store's SetPolicy.
func (s *timedStore) SetPolicy(ctx context.Context, a1 store.Policy) error {
	defer s.observe("SetPolicy", time.Now())
	return s.Store.SetPolicy(ctx, a1)
}

// SetRolloutAgentNode times the store's SetRolloutAgentNode.
func (s *timedStore) SetRolloutAgentNode(ctx context.Context, a1 string, a2 string, a3 []string, a4 string, a5 string, a6 string, a7 string, a8 time.Time) (bool, error) {
	defer s.observe("SetRolloutAgentNode", time.Now())
	return s.Store.SetRolloutAgentNode(ctx, a1, a2, a3, a4, a5, a6, a7, a8)
}

// SetRolloutAgentState times the store's SetRolloutAgentState.
func (s *timedStore) SetRolloutAgentState(ctx context.Context, a1 string, a2 string, a3 []string, a4 string, a5 string, a6 time.Time) (bool, error) {
	defer s.observe("SetRolloutAgentState", time.Now())
	return s.Store.SetRolloutAgentState(ctx, a1, a2, a3, a4, a5, a6)
}

// SetServerThumbprintAck times the store's SetServerThumbprintAck.
func (s *timedStore) SetServerThumbprintAck(ctx context.Context, a1 string, a2 string) error {
	defer s.observe("SetServerThumbprintAck", time.Now())
	return s.Store.SetServerThumbprintAck(ctx, a1, a2)
}

// SetSetting times the store's SetSetting.
func (s *timedStore) SetSetting(ctx context.Context, a1 string, a2 string) error {
	defer s.observe("SetSetting", time.Now())
	return s.Store.SetSetting(ctx, a1, a2)
}

// Setting times the store's Setting.
func (s *timedStore) Setting(ctx context.Context, a1 string) (string, error) {
	defer s.observe("Setting", time.Now())
	return s.Store.Setting(ctx, a1)
}

// StopNode times the store's StopNode.
func (s *timedStore) StopNode(ctx context.Context, a1 string, a2 time.Time) error {
	defer s.observe("StopNode", time.Now())
	return s.Store.StopNode(ctx, a1, a2)
}

// Task times the store's Task.
func (s *timedStore) Task(ctx context.Context, a1 string) (store.Task, error) {
	defer s.observe("Task", time.Now())
	return s.Store.Task(ctx, a1)
}

// TaskLogs times the store's TaskLogs.
func (s *timedStore) TaskLogs(ctx context.Context, a1 string, a2 int64, a3 int) ([]store.LogLine, error) {
	defer s.observe("TaskLogs", time.Now())
	return s.Store.TaskLogs(ctx, a1, a2, a3)
}

// TouchAgents times the store's TouchAgents.
func (s *timedStore) TouchAgents(ctx context.Context, a1 []string, a2 time.Time) error {
	defer s.observe("TouchAgents", time.Now())
	return s.Store.TouchAgents(ctx, a1, a2)
}

// UpdateTask times the store's UpdateTask.
func (s *timedStore) UpdateTask(ctx context.Context, a1 string, a2 store.TaskUpdate) error {
	defer s.observe("UpdateTask", time.Now())
	return s.Store.UpdateTask(ctx, a1, a2)
}

// UserByID times the store's UserByID.
func (s *timedStore) UserByID(ctx context.Context, a1 string) (store.User, error) {
	defer s.observe("UserByID", time.Now())
	return s.Store.UserByID(ctx, a1)
}

// UserByName times the store's UserByName.
func (s *timedStore) UserByName(ctx context.Context, a1 string) (store.User, error) {
	defer s.observe("UserByName", time.Now())
	return s.Store.UserByName(ctx, a1)
}

// WithdrawNodeCall times the store's WithdrawNodeCall.
func (s *timedStore) WithdrawNodeCall(ctx context.Context, a1 string) (bool, error) {
	defer s.observe("WithdrawNodeCall", time.Now())
	return s.Store.WithdrawNodeCall(ctx, a1)
}

// storeOps are the operations timedStore times.
var storeOps = []string{
	"APIKeyByHash",
	"AcceptNodeCalls",
	"AddAgentPackage",
	"AddBundle",
	"AddListening",
	"AgentByID",
	"AgentByName",
	"AgentByThumbprint",
	"AgentPackage",
	"AgentPackages",
	"AnswerNodeCall",
	"AppendTaskLogs",
	"BlobInfo",
	"Bundle",
	"Bundles",
	"ClaimRollout",
	"ClaimTask",
	"CompleteIdempotencyKey",
	"CreateAPIKey",
	"CreateNodeCall",
	"CreateRollout",
	"CreateTasks",
	"CreateToken",
	"CreateUser",
	"DeleteAgent",
	"DeleteBlob",
	"DeleteBlobs",
	"DeleteNodeCall",
	"DeleteToken",
	"DeleteUser",
	"DisconnectAgent",
	"FinishRollout",
	"HeartbeatNode",
	"IsRevoked",
	"ListAPIKeys",
	"ListAgents",
	"ListListeningAgents",
	"ListTasks",
	"ListTokens",
	"ListUsers",
	"Listen",
	"NodeCall",
	"Nodes",
	"Notify",
	"Policy",
	"PromoteThumbprint",
	"PruneNodeCalls",
	"PruneNodes",
	"PurgeIdempotencyKeys",
	"PutBlob",
	"ReadBlob",
	"RecordConnection",
	"RecordHealth",
	"Register",
	"RegisterNode",
	"ReleaseIdempotencyKey",
	"ReserveIdempotencyKey",
	"RevocationReason",
	"RevokeAPIKey",
	"Rollout",
	"RolloutAgent",
	"RolloutAgents",
	"Rollouts",
	"RunningRolloutAgents",
	"SetAgentAddress",
	"SetCalamariVersions",
	"SetDialError",
	"SetNextThumbprint",
	"SetNodeDraining",
	"SetPolicy",
	"SetRolloutAgentNode",
	"SetRolloutAgentState",
	"SetServerThumbprintAck",
	"SetSetting",
	"Setting",
	"StopNode",
	"Task",
	"TaskLogs",
	"TouchAgents",
	"UpdateTask",
	"UserByID",
	"UserByName",
	"WithdrawNodeCall",
}
