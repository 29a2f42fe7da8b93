package protocol

// Message types for diagnostics. Coordinator -> agent: Diagnostics ->
// DiagnosticsArchive, whose header is followed on the same stream by the
// archive's bytes (a .tar.gz, see package diag), Size of them, whose
// SHA-256 is SHA256.
//
// Agents older than these types answer CodeUnknownType, as every agent
// answers a type it does not know: that answer is the negotiation. It
// needs no protocol version of its own, and the coordinator turns it
// into a note that the agent must be upgraded to collect diagnostics.
const (
	TypeDiagnostics        = "diagnostics"
	TypeDiagnosticsArchive = "diagnostics_archive"
)

// MaxDiagnosticsSize is the largest archive an agent may send. The agent
// keeps its archive well below it (its logs are rotated at 10 MiB and
// capped in the archive); the coordinator refuses a header declaring more
// before reading a byte.
const MaxDiagnosticsSize = 256 << 20

// Diagnostics asks an agent for its diagnostics archive.
type Diagnostics struct{}

// DiagnosticsArchive answers Diagnostics: the archive's bytes follow.
type DiagnosticsArchive struct {
	Archive Transfer `json:"archive"`
}
