package api

// APIError is the body of every failed API call.
type APIError struct {
	Error string `json:"error"`
}
