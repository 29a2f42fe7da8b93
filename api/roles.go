package api

import (
	"fmt"
	"slices"
	"strings"
)

// Role is what an API key or a console user may do. Every route of the
// API names the roles that may call it (the OpenAPI document's x-roles);
// the console's actions follow the same table.
type Role string

// The roles, from the most to the least allowed.
const (
	// RoleAdmin may do everything, managing users and API keys included.
	RoleAdmin Role = "admin"
	// RoleOperator may do everything but what only an admin may: users,
	// API keys, exports and imports, the machine policy and goroutine
	// dumps. Keys and users made before roles existed without admin
	// rights are operators.
	RoleOperator Role = "operator"
	// RoleDeployer runs, cancels and reads tasks, and reads agents, in its
	// environments only; it may upload task files and read the
	// coordinator's settings, and nothing else.
	RoleDeployer Role = "deployer"
	// RoleViewer only reads, and not what holds secrets or internals
	// (users, API keys, exports, goroutine dumps, diagnostics archives).
	RoleViewer Role = "viewer"
)

// Roles lists every role, from the most to the least allowed.
var Roles = []Role{RoleAdmin, RoleOperator, RoleDeployer, RoleViewer}

// RoleNames is the roles for a message or a flag's help: "admin,
// operator, deployer or viewer".
func RoleNames() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// ParseRole reads a role's name, whatever its case.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("role %q: want %s", s, RoleNames())
	}
	return r, nil
}

// ValidateRole checks a role and its environments as a request gives them:
// a deployer needs at least one environment, and only a deployer has
// any. It returns the role to store (with the environments' duplicates,
// whatever their case, dropped): "" means operator, the role keys had
// before roles existed.
func ValidateRole(role Role, environments []string) (Role, []string, error) {
	if role == "" {
		role = RoleOperator
	}
	r, err := ParseRole(string(role))
	if err != nil {
		return "", nil, err
	}
	var envs []string
	for _, e := range environments {
		if err := ValidateName("environment", e); err != nil {
			return "", nil, err
		}
		if !slices.ContainsFunc(envs, func(x string) bool { return strings.EqualFold(x, e) }) {
			envs = append(envs, e)
		}
	}
	switch {
	case r == RoleDeployer && len(envs) == 0:
		return "", nil, fmt.Errorf("a deployer needs at least one environment (--environment ENV, repeatable): it may act only on the agents of those")
	case r != RoleDeployer && len(envs) > 0:
		return "", nil, fmt.Errorf("environments limit a deployer only; the role %s acts on every environment", r)
	}
	return r, envs, nil
}

// RoleAllows says in words what a role may do, for refusals and the
// console. environments are a deployer's.
func RoleAllows(r Role, environments []string) string {
	switch r {
	case RoleAdmin:
		return "everything, managing users and API keys included"
	case RoleOperator:
		return "everything but managing users and API keys, exports and imports, the machine policy and goroutine dumps"
	case RoleDeployer:
		return "run, cancel and read tasks and read agents in the environments " + strings.Join(environments, ", ") +
			", upload task files, and read the coordinator's settings"
	case RoleViewer:
		return "only read (GET), and not users, API keys, exports, goroutine dumps or diagnostics archives"
	}
	return "nothing"
}

// InEnvironments reports whether env is one of environments, whatever
// its case: environments match that way everywhere.
func InEnvironments(environments []string, env string) bool {
	return slices.ContainsFunc(environments, func(e string) bool { return strings.EqualFold(e, env) })
}
