package compliance

// SetEnrollmentPage sets how many devices a listing reads at a time for the
// enrollments, until the returned function restores it.
func SetEnrollmentPage(n int) (restore func()) {
	old := enrollmentPage
	enrollmentPage = n
	return func() { enrollmentPage = old }
}
