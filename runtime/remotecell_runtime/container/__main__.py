from remotecell_runtime.container.main import main

main()
