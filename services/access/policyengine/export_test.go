package policyengine

// SetMaxTemplate sets the per-application template bound for a test and returns a
// function that restores it.
func SetMaxTemplate(n int) (restore func()) {
	old := maxTemplate
	maxTemplate = n
	return func() { maxTemplate = old }
}
