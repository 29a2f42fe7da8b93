//go:build race

package httpapi

// raceDetector is true when the tests run with -race, under which
// sync.Pool drops items at random: allocation counts do not hold.
const raceDetector = true
