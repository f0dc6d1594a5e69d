package limits

const childEnv = "LIMITS_TEST_CHILD"

func runChild(mode string) int { return 2 }
