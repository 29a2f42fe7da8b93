// Package diskfree reads the free space of the file system holding a
// path: the agent reports it in its health, and task retention keeps it
// above the machine policy's floor.
package diskfree
