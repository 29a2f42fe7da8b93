package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	kservice "github.com/kardianos/service"
	"go.uber.org/zap"
)

// Managed reports whether a service manager runs this process and, if so,
// the service's name: the definition sets Env to it; a process that
// kardianos finds not interactive without it (a definition written by
// hand) is named after its home.
func Managed(home string) (name string, ok bool) {
	if n := os.Getenv(Env); n != "" && ValidateName(n) == nil {
		return n, true
	}
	if !kservice.Interactive() {
		return DefaultName(home), true
	}
	return "", false
}

// RunConfig tunes Run.
type RunConfig struct {
	// Name is the service's name. Required.
	Name string
	// StopTimeout bounds how long a stop waits for the program to end
	// after its context is cancelled. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// Logger receives what the wrapper does. Default: discard.
	Logger *zap.Logger
}

// Run runs program under the service manager through kardianos: it starts
// program in a goroutine, and when the manager (or SIGTERM, or ctx) asks
// for a stop it cancels program's context and waits for it up to
// StopTimeout. It returns program's error, or an error if program did not
// stop in time; it never exits the process itself. A program that returns
// on its own (the agent after an upgrade, to re-execute) ends Run too.
func Run(ctx context.Context, cfg RunConfig, program func(ctx context.Context) error) error {
	if err := ValidateName(cfg.Name); err != nil {
		return err
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &prog{ctx: pctx, cancel: cancel, run: program, timeout: cfg.StopTimeout, done: make(chan struct{}), log: cfg.Logger.Named("service")}
	svc, err := kservice.New(p, &kservice.Config{
		Name: cfg.Name,
		Option: kservice.KeyValue{
			// Replaces kardianos's wait for SIGTERM (SysV, systemd,
			// launchd): a program that ends by itself must end Run too.
			"RunWait": func() {
				sig := make(chan os.Signal, 1)
				signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
				defer signal.Stop(sig)
				select {
				case s := <-sig:
					p.log.Info("stop requested", zap.String("signal", s.String()))
				case <-p.done:
				case <-ctx.Done():
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("run service %s: %w", cfg.Name, err)
	}
	if err := svc.Run(); err != nil {
		return fmt.Errorf("run service %s: %w", cfg.Name, err)
	}
	// kardianos may return before Stop (a failed Start); the program
	// must not outlive Run.
	cancel()
	<-p.started()
	return p.result()
}

// prog is the kardianos Interface around the program.
type prog struct {
	ctx     context.Context
	cancel  context.CancelFunc
	run     func(ctx context.Context) error
	timeout time.Duration
	log     *zap.Logger

	once    sync.Once
	launch  chan struct{} // closed once Start ran (or never will)
	done    chan struct{} // closed when run returned
	mu      sync.Mutex
	err     error
	stopErr error
}

func (p *prog) started() <-chan struct{} {
	p.once.Do(func() { p.launch = make(chan struct{}) })
	select {
	case <-p.launch:
		return p.done
	default:
		// Start never ran: nothing to wait for.
		ch := make(chan struct{})
		close(ch)
		return ch
	}
}

// Start launches the program; kardianos wants it not to block.
func (p *prog) Start(s kservice.Service) error {
	p.once.Do(func() { p.launch = make(chan struct{}) })
	close(p.launch)
	go func() {
		err := p.run(p.ctx)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
		if p.ctx.Err() == nil && runtime.GOOS == "windows" {
			// The Service Control Manager ends Run only by a stop; ask
			// for one (the program ended: an upgrade, or a failure).
			if err := s.Stop(); err != nil {
				p.log.Error("could not stop the service after the agent ended", zap.Error(err))
			}
		}
	}()
	return nil
}

// Stop cancels the program and waits for it, at most the stop timeout. It
// returns rather than exits: the service manager decides what follows.
func (p *prog) Stop(kservice.Service) error {
	p.cancel()
	select {
	case <-p.done:
		return nil
	case <-time.After(p.timeout):
		err := fmt.Errorf("the agent did not stop within %s", p.timeout)
		p.mu.Lock()
		p.stopErr = err
		p.mu.Unlock()
		return err
	}
}

func (p *prog) result() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.err, p.stopErr)
}
