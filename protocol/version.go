package protocol

import (
	"errors"
	"fmt"
)

// Protocol versions this build speaks. A coordinator built with a higher
// MinProtocol still gives older agents an upgrade-only session.
const (
	ProtocolVersion = 1
	MinProtocol     = 1
)

// ErrIncompatible means the two ranges have no version in common and the
// peer is not merely old enough to be upgraded.
var ErrIncompatible = errors.New("no common protocol version")

// Negotiate picks the protocol for a session between an agent speaking
// [agentMin, agentMax] and a coordinator speaking [ourMin, ourMax]: the
// highest common version. An agent whose newest version is below ourMin
// gets its own newest version with upgradeOnly set, so it can still be
// upgraded.
func Negotiate(agentMin, agentMax, ourMin, ourMax int) (version int, upgradeOnly bool, err error) {
	if agentMin <= 0 || agentMax < agentMin {
		return 0, false, fmt.Errorf("%w: agent range [%d, %d] is invalid", ErrIncompatible, agentMin, agentMax)
	}
	if agentMax < ourMin {
		return agentMax, true, nil
	}
	v := min(agentMax, ourMax)
	if v < max(agentMin, ourMin) {
		return 0, false, fmt.Errorf("%w: agent speaks [%d, %d], coordinator [%d, %d]", ErrIncompatible, agentMin, agentMax, ourMin, ourMax)
	}
	return v, false, nil
}
