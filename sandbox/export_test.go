package sandbox

// Held is how many codes and tokens the server remembers, for the tests
// that check it forgets them.
func (s *Server) Held() (codes, tokens int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.codes), len(s.tokens)
}
