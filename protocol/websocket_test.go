package protocol

import "testing"

func TestValidateServer(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"coordinator.example:10943", true},
		{"wss://lb.example/agent", true},
		{"wss://lb.example:8443/agent", true},
		{"ws://127.0.0.1:10980/agent", true},
		{"coordinator.example", false},
		{"wss:///agent", false},
		{"wss://user:pw@lb.example/agent", false},
		{"wss://lb.example/agent?x=1", false},
		{"wss://lb example/agent", false},
		{"https://lb.example/agent", false},
	}
	for _, tt := range tests {
		if err := ValidateServer(tt.in); (err == nil) != tt.ok {
			t.Errorf("ValidateServer(%q): got %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}
