// Package version holds the version every Tendril binary is stamped with.
package version

// Version is set at build time with
// -ldflags "-X github.com/tendrildeploy/tendril/version.Version=1.2.3".
var Version = "0.0.0-dev"
