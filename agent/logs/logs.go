// Package logs builds the agent's one zap logger: JSON lines in a
// size-rotated file when the agent runs as a service (or is given a log
// file), human-readable lines on a terminal, JSON on a stderr that is not
// one (a log collector's pipe).
package logs

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mattn/go-isatty"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Rotation limits of a log file: a service runs for months, its log must
// not fill the disk.
const (
	MaxSizeMiB = 10
	MaxBackups = 5
)

// Config says where the log goes.
type Config struct {
	// Level is debug, info, warn or error. Default info.
	Level string
	// File, if set, receives JSON lines, rotated at MaxSizeMiB with
	// MaxBackups compressed old files kept.
	File string
	// Console forces (true) human-readable output on stderr; by default
	// it is used when stderr is a terminal.
	Console *bool
}

// New builds the logger. close flushes and closes the file; call it when
// the process is done logging.
func New(cfg Config) (log *zap.Logger, close func(), err error) {
	if cfg.Level == "" {
		cfg.Level = "info"
	}
	lvl, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w (use debug, info, warn or error)", err)
	}
	console := isatty.IsTerminal(os.Stderr.Fd()) || isatty.IsCygwinTerminal(os.Stderr.Fd())
	if cfg.Console != nil {
		console = *cfg.Console
	}
	var cores []zapcore.Core
	closeFile := func() {}
	if cfg.File != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.File), 0o700); err != nil {
			return nil, nil, fmt.Errorf("open log file: %w", err)
		}
		// Opened now, so a file that cannot be written fails the start
		// rather than silently losing the log.
		f, err := os.OpenFile(cfg.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("open log file: %w", err)
		}
		f.Close()
		lj := &lumberjack.Logger{Filename: cfg.File, MaxSize: MaxSizeMiB, MaxBackups: MaxBackups, Compress: true}
		cores = append(cores, zapcore.NewCore(jsonEncoder(), zapcore.AddSync(lj), lvl))
		closeFile = func() { lj.Close() }
	}
	switch {
	case console:
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		cores = append(cores, zapcore.NewCore(zapcore.NewConsoleEncoder(ec), zapcore.Lock(os.Stderr), lvl))
	case cfg.File == "":
		cores = append(cores, zapcore.NewCore(jsonEncoder(), zapcore.Lock(os.Stderr), lvl))
	}
	log = zap.New(zapcore.NewTee(cores...))
	return log, func() { log.Sync(); closeFile() }, nil
}

func jsonEncoder() zapcore.Encoder {
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	return zapcore.NewJSONEncoder(ec)
}
