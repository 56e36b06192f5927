from destination_planhat.run import run

if __name__ == "__main__":
    run()
